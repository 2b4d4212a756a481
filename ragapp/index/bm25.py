"""The lexical half of hybrid search: a bm25s index over an Index's chunks, cached on disk.

bm25s does the scoring (sparse precomputed BM25 matrix, Lucene variant); PyStemmer does English
Snowball stemming and bm25s's English stopword list is removed. What is added here:

* CJK words (`segment`): bm25s splits on word characters, which makes a whole Chinese clause one
  token. Runs of Chinese, Japanese and Korean characters are cut into words by
  ragapp.ingest.language (jieba for Chinese, bigrams for Japanese and Korean), decided per chunk
  and per query; the rest of the text goes through bm25s's tokenizer and the stemmer as before,
  so English text is tokenized exactly as without `segment`;

* row → chunk id mapping (chunk ids are SQLite ids with gaps; bm25s numbers rows 0..n-1);
* a disk cache next to the index, `indexes/NAME/bm25/<stamp>/`, where the stamp hashes the
  index version and the BM25 settings. A restart loads it instead of re-tokenizing every chunk;
  a new index version (files added, changed or removed) gets a fresh one transparently. Each
  stamp is written to a temporary folder and renamed into place, so a reader (or a process
  killed half-way) never sees half a cache, and two processes racing to build it both succeed.

* section context: a chunk is scored as BM25(chunk) + context_weight * BM25(its section), where
  a section is up to `section_chunks` consecutive chunks of the same file (a whole abstract, a
  few pages of a PDF). Chunking cuts a document's words apart: a passage about "its effect on
  mortality" no longer holds the drug's name two sentences earlier; the section score gives
  chunked documents back whole-document BM25 quality.

Settings were chosen on the SciFact *train* queries (benchmarks/bench_retrieval.py); the numbers
are in the README's Retrieval section and BENCHMARKS.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ragapp.errors import InvalidInput

# Bump when tokenization changes in a way that makes old caches wrong.
CACHE_FORMAT = 1
_METHODS = ("lucene", "robertson", "atire", "bm25l", "bm25+")


@dataclass(frozen=True)
class BM25Params:
    k1: float = 1.5
    b: float = 0.75
    method: str = "lucene"
    stemmer: str | None = "english"  # a PyStemmer language, or None
    stopwords: str | None = "en"  # a bm25s stopword language, or None
    context_weight: float = 1.0  # weight of the section's BM25 score; 0 scores chunks alone
    section_chunks: int = 8  # a section: up to this many consecutive chunks of one file
    segment: bool = True  # cut CJK text into words (False: bm25s alone, one token per CJK clause)

    def __post_init__(self):
        if self.context_weight < 0:
            raise InvalidInput(f"bm25 context_weight={self.context_weight} must be >= 0")
        if self.section_chunks < 1:
            raise InvalidInput(f"bm25 section_chunks={self.section_chunks} must be at least 1")
        if self.k1 < 0:
            raise InvalidInput(f"bm25 k1={self.k1} must be >= 0 (1.2-2.0 is usual)")
        if not 0 <= self.b <= 1:
            raise InvalidInput(f"bm25 b={self.b} must be between 0 and 1")
        if self.method not in _METHODS:
            raise InvalidInput(f"unknown bm25 method {self.method!r}; choose one of {', '.join(_METHODS)}")

    def key(self) -> str:
        return json.dumps({**asdict(self), "format": CACHE_FORMAT}, sort_keys=True)


class _Tokenizer:
    """bm25s.tokenize with a PyStemmer stemmer per thread: a Stemmer object must not be used by
    two threads at once, and the web server searches from several."""

    def __init__(self, params: BM25Params):
        self.params = params
        self._local = threading.local()

    def _stemmer(self):
        if self.params.stemmer is None:
            return None
        stemmer = getattr(self._local, "stemmer", None)
        if stemmer is None:
            import Stemmer

            stemmer = self._local.stemmer = Stemmer.Stemmer(self.params.stemmer)
        return stemmer

    def corpus(self, texts: list[str], progress: bool):
        import bm25s

        if self.params.segment:
            return self._segmented(texts, progress)
        return bm25s.tokenize(texts, stopwords=self.params.stopwords, stemmer=self._stemmer(),
                              show_progress=progress, return_ids=True)

    def query(self, text: str) -> list[str]:
        import bm25s

        if self.params.segment:
            return self._segmented([text], False)[0]
        return bm25s.tokenize(text, stopwords=self.params.stopwords, stemmer=self._stemmer(),
                              show_progress=False, return_ids=False)[0]

    def _segmented(self, texts: list[str], progress: bool) -> list[list[str]]:
        """bm25s's tokens of the text outside CJK runs, then the words of the CJK runs (BM25
        ignores word order), each text's CJK treated as its own language."""
        import bm25s

        from ragapp.ingest.language import CJK_RUN, cjk_words, has_cjk, language

        rest = [CJK_RUN.sub(" ", t) if has_cjk(t) else t for t in texts]
        out = bm25s.tokenize(rest, stopwords=self.params.stopwords, stemmer=self._stemmer(),
                             show_progress=progress, return_ids=False)
        for text, tokens in zip(texts, out):
            if has_cjk(text):
                lang = language(text)
                for run in CJK_RUN.findall(text):
                    tokens.extend(cjk_words(run, lang))
        return out


def sections_of(groups: list, size: int) -> np.ndarray:
    """(n,) section number of each chunk: runs of up to `size` consecutive chunks of one group
    (one file's content), in chunk order."""
    out = np.zeros(len(groups), np.int64)
    section, run = -1, 0
    for i, group in enumerate(groups):
        if i == 0 or group != groups[i - 1] or run == size:
            section, run = section + 1, 0
        out[i] = section
        run += 1
    return out


def _bm25(tokens, params: BM25Params, progress: bool):
    import bm25s

    model = bm25s.BM25(k1=params.k1, b=params.b, method=params.method)
    model.index(tokens, show_progress=progress)
    return model


def _score(model, terms: list[str], n: int) -> np.ndarray:
    term_ids = model.get_tokens_ids(terms)
    if not term_ids:
        return np.zeros(n, np.float32)
    return np.asarray(model.get_scores_from_ids(term_ids), dtype=np.float32)


class BM25Index:
    """BM25 scores of a query against every chunk of one index (with section context)."""

    def __init__(self, model, ids: np.ndarray, params: BM25Params, section_model=None, sections=None):
        self.model = model  # bm25s.BM25 over chunks, or None for an index without chunks
        self.ids = np.asarray(ids, dtype=np.int64)  # row -> chunk id
        self.params = params
        self.section_model = section_model  # bm25s.BM25 over sections, or None
        self.sections = sections  # row -> section number
        self.tokenizer = _Tokenizer(params)

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def build(cls, chunks: Iterable[tuple[int, str, object]], params: BM25Params = BM25Params(),
              progress: bool = False) -> BM25Index:
        """chunks: (chunk id, text, group) in chunk order; a group (any comparable value) is one
        file's content, so that sections never span two files."""
        ids, texts, groups = [], [], []
        for cid, text, group in chunks:
            ids.append(int(cid))
            texts.append(text)
            groups.append(group)
        if not ids:
            return cls(None, np.zeros(0, np.int64), params)
        tokenizer = _Tokenizer(params)
        model = _bm25(tokenizer.corpus(texts, progress), params, progress)
        section_model = sections = None
        if params.context_weight > 0:
            sections = sections_of(groups, params.section_chunks)
            joined = [[] for _ in range(int(sections[-1]) + 1)]
            for text, sec in zip(texts, sections):
                joined[sec].append(text)
            section_model = _bm25(tokenizer.corpus(["\n".join(t) for t in joined], progress), params, progress)
        return cls(model, np.array(ids, np.int64), params, section_model, sections)

    def scores(self, query: str) -> np.ndarray:
        """(n_chunks,) float32 scores in row order; all zero when no query term is in the index."""
        if self.model is None:
            return np.zeros(0, np.float32)
        terms = self.tokenizer.query(query)
        scores = _score(self.model, terms, len(self.ids))
        if self.section_model is not None:
            context = _score(self.section_model, terms, int(self.sections[-1]) + 1)
            scores = scores + np.float32(self.params.context_weight) * context[self.sections]
        return scores

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True)
        np.save(folder / "chunk_ids.npy", self.ids)
        if self.model is not None:
            self.model.save(str(folder / "chunks"), show_progress=False)
        if self.section_model is not None:
            np.save(folder / "sections.npy", self.sections)
            self.section_model.save(str(folder / "sections"), show_progress=False)
        (folder / "params.json").write_text(self.params.key())

    @classmethod
    def load(cls, folder: Path, params: BM25Params) -> BM25Index:
        import bm25s

        if (folder / "params.json").read_text() != params.key():
            raise ValueError(f"{folder} was built with other settings")
        ids = np.load(folder / "chunk_ids.npy")
        if not len(ids):
            return cls(None, ids, params)
        model = bm25s.BM25.load(str(folder / "chunks"), show_progress=False)
        section_model = sections = None
        if params.context_weight > 0:
            sections = np.load(folder / "sections.npy")
            section_model = bm25s.BM25.load(str(folder / "sections"), show_progress=False)
        return cls(model, ids, params, section_model, sections)


def _chunks_with_groups(index, batch: int = 5000):
    """(id, text, group) of every chunk in id order; the group is the tuple of paths citing the
    chunk's content, which identifies that content (a path holds one content at a time)."""
    ids = [cid for cid, _ in index.all_chunks()]
    for i in range(0, len(ids), batch):
        for row in index.get_chunks(ids[i : i + batch]):
            yield row["id"], row["text"], tuple(row.get("sources") or [row["source"]])


def _stamp(version: str, params: BM25Params) -> str:
    return hashlib.sha256(f"{version}\n{params.key()}".encode()).hexdigest()[:20]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean(cache_dir: Path, keep: str) -> None:
    """Drop caches of other index versions or settings, and temporary folders of dead builds."""
    for entry in cache_dir.iterdir():
        if entry.name == keep:
            continue
        if entry.name.startswith(".tmp-"):
            try:
                pid = int(entry.name.split("-")[1])
            except (IndexError, ValueError):
                pid = -1
            if pid == os.getpid() or _pid_alive(pid):
                continue  # a build in progress (ours in another thread, or another process)
        shutil.rmtree(entry, ignore_errors=True)


def load_or_build(index, params: BM25Params = BM25Params(), progress: bool = False) -> tuple[BM25Index, str]:
    """The BM25 index of `index` (a ragapp.index.index.Index) at its current version, from the disk
    cache when there is one; returns it with the version it reflects."""
    cache_dir = Path(index.root) / "bm25"
    for _ in range(3):
        version = index.version()
        stamp = _stamp(version, params)
        target = cache_dir / stamp
        if target.is_dir():
            try:
                return BM25Index.load(target, params), version
            except Exception:  # damaged by hand or by a disk problem: rebuild it
                shutil.rmtree(target, ignore_errors=True)
        bm25 = BM25Index.build(_chunks_with_groups(index), params, progress=progress)
        if index.version() != version:
            continue  # the index changed while we read it: what we built matches neither version
        cache_dir.mkdir(exist_ok=True)
        tmp = cache_dir / f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            bm25.save(tmp)
            os.replace(tmp, target)
        except OSError:  # another process renamed its copy first: theirs is as good as ours
            shutil.rmtree(tmp, ignore_errors=True)
        _clean(cache_dir, keep=stamp)
        return bm25, version
    # An index rewritten continuously: serve what we have without caching it.
    return BM25Index.build(_chunks_with_groups(index), params, progress=progress), index.version()
