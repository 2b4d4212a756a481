"""The state shared by the web page and the HTTP API: collections per user, indexing jobs, chat;
and the `ragapp serve` flags (ragapp.serve.api assembles the app and runs it).

One `RagService` serves every request and thread of `ragapp serve`:

- Collections are indexes in one folder. With login (`--auth`), user alice's collection "notes" is
  the index `alice--notes`; she sees and changes only hers, plus the collections the server was
  started with (`--index`), which are shared read-only. Without login everything is one user's.
- Indexing (uploads, server folders) runs in background threads: jobs on one collection run one
  after another (an index takes one writer at a time: Index.writing() is an flock, which two
  threads of one process would also collide on), jobs on different collections side by side (up
  to `index_jobs`), so one user's slow files never hold another user's upload. Parsing happens in
  worker processes with a time and memory budget per file; embedding takes turns in slices
  (LockedEmbedder), so concurrent jobs share the CPU. Chats go on meanwhile: readers see the last
  committed state of the SQLite store, and the retriever reloads when it changes.
- Models are loaded once and shared: the generator serialises generation with its own lock; the
  embedder is wrapped in `LockedEmbedder`, because a Hugging Face fast tokenizer raises
  "Already borrowed" when two threads call it at once, and here retrieval, the citation check
  and indexing all embed.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ragapp.answer.chat import ChatSession, ChatSettings
from ragapp.answer.gate import load_gate
from ragapp.config import (
    DEFAULT_EMBEDDER,
    DEFAULT_FILE_TIMEOUT_S,
    DEFAULT_HOST,
    DEFAULT_INDEX_DIR,
    DEFAULT_K,
    DEFAULT_PORT,
)
from ragapp.errors import (
    Busy,
    Forbidden,
    IndexNotFound,
    Interrupted,
    InvalidInput,
    RagError,
)
from ragapp.generate.registry import ANSWER_MODES
from ragapp.index.index import Index, check_name, list_indexes
from ragapp.index.sync import stop_when
from ragapp.ingest import embed  # embed.load_embedder: one name to replace in tests
from ragapp.serve.throttle import LoginThrottle
from ragapp.serve.uploads import (
    UploadLimits,
    check_batch,
    clear_partial,
    remove_upload,
    save_uploads,
)

SEP = "--"  # between user and collection in the index name (user names have no "-")
UPLOADS = "_uploads"  # index_dir/_uploads/INDEX/: saved uploads; "_" can never start an index name
EVALS = "_evals"  # index_dir/_evals/JOB/: an evaluation's question set, answers, report and charts
BACKENDS = ANSWER_MODES


@dataclass
class ServeConfig:
    index_dir: Path = DEFAULT_INDEX_DIR
    collections: list[str] = field(default_factory=list)  # --index: preselected; shared read-only with --auth
    folder: Path | None = None  # --folder: indexed into collections[0] when the server starts
    backend: str = "llm"
    model: str | None = None
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    limits: UploadLimits = field(default_factory=UploadLimits)
    folder_roots: list[Path] | None = None  # where the page may index server folders (None: anywhere)
    embedder: str = DEFAULT_EMBEDDER  # for collections created by an upload
    k: int = DEFAULT_K
    allowed_hosts: list[str] = field(default_factory=list)  # --allowed-host: Host names besides loopback and --host
    allowed_origins: list[str] = field(default_factory=list)  # --allowed-origin: other sites trusted (CORS on for them)
    file_timeout: float = DEFAULT_FILE_TIMEOUT_S  # --file-timeout: a file taking longer to parse is skipped
    index_jobs: int = 4  # collections indexed side by side (jobs on one collection always take turns)

    def __post_init__(self) -> None:
        self.index_dir = Path(self.index_dir)
        if self.backend not in BACKENDS:
            raise InvalidInput(f"unknown --backend {self.backend!r}; choose one of: {', '.join(BACKENDS)}")
        for name in self.collections:
            check_name(name)
        if self.folder is not None and not self.collections:
            raise InvalidInput("--folder needs --index NAME: the collection to index it into")
        if not self.file_timeout > 0:
            raise InvalidInput(f"--file-timeout {self.file_timeout:g}: must be more than 0 seconds")
        if self.index_jobs < 1:
            raise InvalidInput(f"index_jobs {self.index_jobs}: must be at least 1")
        if not 0 < self.port < 65536:
            raise InvalidInput(f"--port must be between 1 and 65535, got {self.port}")


class LockedEmbedder:
    """An Embedder whose encode calls take turns (see the module docstring).

    Long calls (indexing) are cut into slices of SLICE texts, each taking the lock on its own, so
    that a chat's query waits for one slice (a fraction of a second), not for a whole indexing batch.
    A slice is smaller than one encode batch, which also keeps indexing in the server off the
    embedder's data-parallel path: that path sets torch to one thread process-wide while it runs,
    which would slow down the chat model generating in the same process.
    """

    SLICE = 32

    def __init__(self, inner):
        self.inner = inner
        self.name, self.dim, self.max_seq_length = inner.name, inner.dim, inner.max_seq_length
        self.tokenizer = inner.tokenizer  # the chunker copies its Rust tokenizer; it never calls this one
        self.asymmetric = getattr(inner, "asymmetric", False)  # see ragapp.retrieve.similarity.CachedEmbedder
        self._lock = threading.Lock()

    def encode(self, texts, batch_size: int = 64, show_progress: bool = False):
        import numpy as np

        texts = list(texts)
        if len(texts) <= self.SLICE:
            with self._lock:
                return self.inner.encode(texts, batch_size=batch_size, show_progress=False)
        parts = []
        for i in range(0, len(texts), self.SLICE):
            with self._lock:
                parts.append(self.inner.encode(texts[i : i + self.SLICE], batch_size=batch_size, show_progress=False))
        return np.concatenate(parts)

    def encode_query(self, text: str):
        with self._lock:
            return self.inner.encode_query(text)


@dataclass
class Job:
    """One indexing run: an upload or a server folder, into one collection."""

    id: str
    owner: str
    collection: str  # as the owner names it
    index: str  # the index name on disk
    what: str  # "3 uploaded files", "folder /data/docs"
    status: str = "queued"  # queued | running | done | failed
    message: str = ""
    report: dict = field(default_factory=dict)
    summary: str = ""  # the message without the reasons of failed files (the page lists those a line each)
    started: float = 0.0
    finished: float = 0.0
    done_event: threading.Event = field(default_factory=threading.Event, repr=False)
    stop: threading.Event = field(default_factory=threading.Event, repr=False)  # set by RagService.close

    def interrupted(self, message: str) -> None:
        """End a job that close() stopped before it could run (it stays queued otherwise, and a
        request waiting for it would wait for ever)."""
        if not self.done_event.is_set():
            self.status, self.message, self.finished = "failed", message, time.time()
            self.done_event.set()

    def progress(self) -> tuple[int, int]:
        """(files done, files in all) while running; sync reports progress only through its tqdm
        bar, so the bar of this index is read (jobs of one index never overlap)."""
        if self.status != "running":
            return (1, 1) if self.status in ("done", "failed") else (0, 0)
        from tqdm import tqdm

        for bar in list(getattr(tqdm, "_instances", ())):
            if getattr(bar, "desc", "") == f"indexing {self.index}" and bar.total:
                return int(bar.n), int(bar.total)
        return 0, 0

    def to_dict(self) -> dict:
        done, total = self.progress()
        return {"id": self.id, "collection": self.collection, "what": self.what, "status": self.status,
                "message": self.message, "files_done": done, "files_total": total, "report": self.report}


@dataclass
class EvalJob:
    """One evaluation (ragapp.eval) of a collection: make or take a question set, ask it, report."""

    id: str
    owner: str
    collection: str  # as the owner names it
    what: str  # "20 questions made from the collection", "12 questions given"
    out_dir: Path
    status: str = "queued"  # queued | running | done | failed
    message: str = ""
    stage: str = ""  # what it is doing now
    done: int = 0  # answers made (cached ones included) of `total`
    total: int = 0
    report: dict = field(default_factory=dict)
    markdown: str = ""
    files: dict[str, str] = field(default_factory=dict)  # file name -> path, for download
    started: float = 0.0
    finished: float = 0.0
    done_event: threading.Event = field(default_factory=threading.Event, repr=False)
    stop: threading.Event = field(default_factory=threading.Event, repr=False)

    def interrupted(self, message: str) -> None:
        if not self.done_event.is_set():
            self.status, self.message, self.finished = "failed", message, time.time()
            self.done_event.set()

    def to_dict(self) -> dict:
        return {"id": self.id, "kind": "eval", "collection": self.collection, "what": self.what, "status": self.status,
                "message": self.message, "stage": self.stage, "done": self.done, "total": self.total,
                "report": self.report, "markdown": self.markdown, "files": sorted(self.files)}


def _as_source(source: str, line: str) -> str:
    """A sync report line with the file's path on the server (uploads folder, --folder) replaced by
    its name in the collection: users see what they uploaded, not the server's directories."""
    path, sep, rest = line.partition(": ")
    if sep and Path(path).as_posix().endswith("/" + source):
        return f"{source}: {rest}"
    return line


class RagService:
    def __init__(self, config: ServeConfig, users=None, embedder=None, generator=None):
        """`users`: ragapp.serve.auth.Users or None (no login). `embedder`/`generator`: objects to use
        instead of loading by name (tests pass small ones; a generator is used for the configured backend)."""
        self.config = config
        self.users = users
        self._fixed_embedder = embedder
        self._fixed_generator = generator
        self.default_backend = config.backend
        self._lock = threading.Lock()
        self._embedders: dict[str, LockedEmbedder] = {}
        self._sessions: dict[tuple, Any] = {}
        self._write_locks: dict[str, threading.Lock] = {}
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._answers: OrderedDict[str, tuple[str, Any]] = OrderedDict()
        # one queue per collection; a thread of the pool drains one collection's queue at a time
        self._queues: dict[str, deque] = {}
        self._pool = ThreadPoolExecutor(max_workers=config.index_jobs, thread_name_prefix="ragapp-index")
        # evaluations take turns in a thread of their own, so indexing never waits for one
        self._eval_jobs: OrderedDict[str, EvalJob] = OrderedDict()
        self._eval_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ragapp-eval")
        self.throttle = LoginThrottle()
        config.index_dir.mkdir(parents=True, exist_ok=True)

    @property
    def gate_threshold(self) -> float:
        """The calibrated evidence threshold: the page's default for its gate setting."""
        return round(load_gate().threshold, 2)

    # -- users and names ---------------------------------------------------------------------------
    @property
    def auth(self) -> bool:
        return self.users is not None

    def owner(self, user: str | None) -> str:
        if not self.auth:
            return "local"
        if not user or user not in self.users:
            raise Forbidden("log in first")
        return user

    def real_name(self, user: str | None, name: str) -> str:
        if not isinstance(name, str) or not name.strip():
            raise InvalidInput("no collection given; choose a collection (or type a new name to create one)")
        name = check_name(name.strip())
        if not self.auth or name in self.config.collections:
            return name
        return check_name(f"{self.owner(user)}{SEP}{name}")

    def display_name(self, user: str | None, real: str) -> str:
        prefix = f"{user}{SEP}"
        return real[len(prefix):] if self.auth and real.startswith(prefix) else real

    def writable(self, user: str | None, name: str) -> bool:
        return not self.auth or name not in self.config.collections

    def collections(self, user: str | None) -> list[str]:
        """The collections this user sees, by the names they use."""
        have = list_indexes(self.config.index_dir)
        if not self.auth:
            return have
        prefix = f"{self.owner(user)}{SEP}"
        return [n for n in have if n in self.config.collections] + [n[len(prefix):] for n in have if n.startswith(prefix)]

    def resolve(self, user: str | None, names: Sequence[str] | str | None, write: bool = False) -> list[str]:
        """Index names for the user's collection names; IndexNotFound lists what they have."""
        names = [names] if isinstance(names, str) else list(names or [])
        visible = self.collections(user)
        if not names:
            names = [n for n in self.config.collections if n in visible] or (visible if len(visible) == 1 else [])
            if not names:
                raise InvalidInput("no collection chosen; pick one (or upload documents into a new one)")
        out = []
        for name in dict.fromkeys(names):
            if write and not self.writable(user, name):
                raise Forbidden(f"collection {name!r} is shared read-only; upload into a collection of your own")
            if name not in visible:
                hint = f"; yours: {', '.join(visible)}" if visible else "; upload documents to create one"
                raise IndexNotFound(f"no collection {name!r}{hint}")
            out.append(self.real_name(user, name))
        return out

    # -- models ------------------------------------------------------------------------------------
    def embedder_for(self, name: str) -> LockedEmbedder:
        with self._lock:
            if name not in self._embedders:
                fixed = self._fixed_embedder
                if fixed is not None and fixed.name == name:
                    inner = fixed
                else:
                    inner = embed.load_embedder(name)
                self._embedders[name] = LockedEmbedder(inner)
            return self._embedders[name]

    @property
    def embedder_choices(self) -> list[str]:
        """Embedders a user may pick for a new collection: the server's (--embedder) and the bundled
        ones, which load offline (a user never makes the server download a model)."""
        fixed = self._fixed_embedder
        first = fixed.name if fixed is not None else embed.canonical_name(self.config.embedder)
        return list(dict.fromkeys([first, *embed.BUNDLED]))

    def embedder_choice(self, choice: str | None = None) -> str:
        """The embedder name a new collection gets: `choice` (checked), else the server's. Only a
        name: the model is loaded when a collection is really created with it."""
        if not choice:
            return self.embedder_choices[0]
        name = embed.canonical_name(choice)
        if name not in self.embedder_choices:
            raise InvalidInput(f"embedder {choice!r} is not offered by this server; choose one of: "
                               f"{', '.join(self.embedder_choices)}")
        return name

    def session(self, backend: str, model: str | None, embedder_name: str):
        if backend not in BACKENDS:
            raise InvalidInput(f"unknown generator backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
        model = (model or "").strip() or None
        gen_backend = "llm" if backend == "extractive" else backend
        key = (gen_backend, model, embedder_name)
        with self._lock:
            session = self._sessions.get(key)
        if session is None:
            generator = None
            if self._fixed_generator is not None and gen_backend == self.config.backend and model in (None, self.config.model):
                generator = self._fixed_generator
            session = ChatSession([], index_dir=self.config.index_dir, generator=generator, backend=gen_backend,
                                  model=model, embedder=self.embedder_for(embedder_name))
            with self._lock:
                session = self._sessions.setdefault(key, session)
        return session

    def check_generator(self) -> str | None:
        """Load the default generator now; on failure fall back to extractive answers and say why."""
        if self.default_backend == "extractive":
            return None
        try:
            session = self.session(self.default_backend, self.config.model, self.embedder_choice())
            session.generator  # noqa: B018 - loads it
            return None
        except RagError as err:
            self.default_backend = "extractive"
            return f"{err}; answering with quoted passage sentences (extractive) instead"

    # -- chat --------------------------------------------------------------------------------------
    def chat_stream(self, user: str | None, question: str, history: Sequence[tuple[str, str]] = (),
                    collections: Sequence[str] | None = None, *, k: int | None = None, backend: str | None = None,
                    model: str | None = None, temperature: float = 0.0, gate: bool = True,
                    gate_threshold: float | None = None, max_new_tokens: int = 256, mode: str = "hybrid") -> Iterator:
        """Partial answer texts, then the final Answer (ragapp.answer.chat.ChatSession.answer_stream)."""
        real = self.resolve(user, collections)
        embedders = set()
        for name in real:
            with Index.open(name, self.config.index_dir) as index:
                embedders.add(index.embedder_name)
        if len(embedders) > 1:
            raise InvalidInput(f"the chosen collections were built with different embedders ({', '.join(sorted(embedders))}); "
                               "chat with collections of one embedder at a time")
        backend = backend or self.default_backend
        settings = ChatSettings(k=int(k or self.config.k), mode=mode, temperature=float(temperature),
                                max_new_tokens=int(max_new_tokens), gate=bool(gate), gate_threshold=gate_threshold,
                                extractive_only=backend == "extractive")
        session = self.session(backend, model if backend != "extractive" else None, embedders.pop())
        return session.answer_stream(question, list(history), real, settings)

    def search(self, user: str | None, query: str, collections=None, k: int | None = None, **options):
        real = self.resolve(user, collections)

        with Index.open(real[0], self.config.index_dir) as index:
            emb = index.embedder_name
        retriever = self.session(self.default_backend, None, emb).retriever(real)
        return retriever.search(query, k=int(k or self.config.k), collections=real, **options)

    def remember(self, user: str | None, answer) -> str:
        """Keep an answer for the page's citation panel; returns its id (unguessable)."""
        key = uuid.uuid4().hex[:16]
        with self._lock:
            self._answers[key] = (self.owner(user), answer)
            while len(self._answers) > 2000:
                self._answers.popitem(last=False)
        return key

    def recall(self, user: str | None, key: str):
        with self._lock:
            found = self._answers.get(key)
        if found is None or found[0] != self.owner(user):
            raise InvalidInput("that answer is no longer kept on the server; ask again to see its sources")
        return found[1]

    # -- documents ---------------------------------------------------------------------------------
    def upload_folder(self, real: str) -> Path:
        return self.config.index_dir / UPLOADS / real

    def _write_lock(self, real: str) -> threading.Lock:
        with self._lock:
            return self._write_locks.setdefault(real, threading.Lock())

    def files(self, user: str | None, collection: str) -> list[dict]:
        (real,) = self.resolve(user, [collection])
        with Index.open(real, self.config.index_dir) as index:
            return index.files()

    def info(self, user: str | None, collection: str) -> dict:
        (real,) = self.resolve(user, [collection])
        with Index.open(real, self.config.index_dir) as index:
            info = index.info()
        info.update(name=collection, writable=self.writable(user, collection))
        for key in ("path", "folders"):
            info.pop(key, None)  # server paths are not the user's business
        return info

    def upload(self, user: str | None, collection: str, files: Sequence[tuple[str, BinaryIO | Path]],
               embedder: str | None = None) -> Job:
        """Save the files (limits, safe names) into the collection's upload folder, then index them in the background.
        `embedder`: for a new collection (one of embedder_choices; default: the server's); an existing one keeps its own."""
        owner = self.owner(user)
        new_embedder = self.embedder_choice(embedder)
        if not self.writable(user, check_name(collection.strip())):
            raise Forbidden(f"collection {collection!r} is shared read-only; upload into a collection of your own")
        collection = collection.strip()
        real = self.real_name(user, collection)
        limits = self.config.limits
        names = check_batch([name for name, _ in files], limits)
        folder = self.upload_folder(real)
        saved = save_uploads([(name, src) for name, (_, src) in zip(names, files)], folder, limits)
        self._ensure_collection(real, new_embedder)

        def work(index):
            return index.add_files(saved, base=folder, embedder=self.embedder_for(index.embedder_name), progress=True,
                                   file_timeout=self.config.file_timeout)

        n = len(saved)
        return self._submit(owner, collection, real, f"{n} uploaded file{'s' if n != 1 else ''}", work)

    def _ensure_collection(self, real: str, embedder: str) -> None:
        """Create the index of a new collection with the embedder named (see embedder_choice)."""
        with self._write_lock(real):
            try:
                Index.open(real, self.config.index_dir).close()
            except IndexNotFound:
                Index.create(real, self.config.index_dir, embedder=self.embedder_for(embedder)).close()

    def index_folder(self, user: str | None, collection: str, folder: str | Path, *, trusted: bool = False,
                     embedder: str | None = None) -> Job:
        """Index (incrementally) a folder on the server's disk into a collection, in the background.
        `embedder`: as for upload."""
        owner = self.owner(user) if not trusted else "server"
        new_embedder = self.embedder_choice(embedder)
        collection = check_name(str(collection).strip())
        if not trusted and not self.writable(user, collection):
            raise Forbidden(f"collection {collection!r} is shared read-only; index into a collection of your own")
        real = self.real_name(user, collection) if not trusted else collection
        if not str(folder).strip():
            raise InvalidInput("no folder given; give the path of a folder of documents on the server")
        path = Path(str(folder)).expanduser().resolve()  # links resolved before the check, not after
        roots = None if trusted else self.config.folder_roots
        if roots is not None and not any(path.is_relative_to(r.resolve()) for r in roots):
            # said before looking at the folder, so the answer never tells which folders exist
            where = ", ".join(str(r) for r in roots) or "nowhere (start the server with --folder-root DIR)"
            raise Forbidden(f"{folder}: indexing server folders is allowed only under {where}")
        if not path.is_dir():
            raise InvalidInput(f"{folder}: no such folder on the server; give the path of a folder of documents")
        self._ensure_collection(real, new_embedder)

        def work(index):
            return index.sync(path, embedder=self.embedder_for(index.embedder_name), progress=True, within=roots,
                              file_timeout=self.config.file_timeout)

        # the server's own folder (--folder) is not shown to users in full
        return self._submit(owner, collection, real, f"folder {path.name if trusted else path}", work)

    def remove_file(self, user: str | None, collection: str, source: str) -> int:
        (real,) = self.resolve(user, [collection], write=True)
        lock = self._write_lock(real)
        if not lock.acquire(timeout=2.0):
            raise Busy(f"collection {collection!r} is being indexed; try again when the job finishes")
        try:
            with Index.open(real, self.config.index_dir) as index:
                if index.store.file(source) is None:
                    raise IndexNotFound(f"no file {source!r} in collection {collection!r}; "
                                        "its file list shows the names (GET /v1/documents/COLLECTION)")
                removed = index.remove_files([source])
            remove_upload(self.upload_folder(real), source)
            return removed
        finally:
            lock.release()

    # -- jobs --------------------------------------------------------------------------------------
    def _submit(self, owner: str, collection: str, real: str, what: str, work) -> Job:
        job = Job(uuid.uuid4().hex[:12], owner, collection, real, what)
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > 200:
                self._jobs.popitem(last=False)
            queue = self._queues.get(real)
            if queue is not None:  # a thread is draining this collection's queue: it runs the job next
                queue.append((job, work))
                return job
            self._queues[real] = deque([(job, work)])
        self._pool.submit(self._drain, real)
        return job

    def _drain(self, real: str) -> None:
        """Run one collection's jobs in the order they came, until its queue is empty."""
        while True:
            with self._lock:
                queue = self._queues[real]
                if not queue:
                    del self._queues[real]
                    return
                job, work = queue.popleft()
            self._run(job, work)

    def _run(self, job: Job, work) -> None:
        if job.done_event.is_set():  # ended by close() before it could start
            return
        job.started = time.time()
        try:
            with self._write_lock(job.index):
                job.status = "running"
                if job.stop.is_set():
                    raise Interrupted(f"indexing {job.collection!r} was stopped by the server's shutdown before it began")
                with Index.open(job.index, self.config.index_dir) as index:
                    with stop_when(job.stop):  # close() stops the sync between two commits
                        report = work(index)
                    info = index.info()
            job.report = {k: getattr(report, k) for k in ("added", "updated", "removed", "unchanged", "renamed",
                                                          "skipped", "chunks_added", "chunks_removed", "seconds")}
            # parse timeouts, memory, crashes included; notes: text left out of a file as not prose
            job.report["failed"] = [[source, _as_source(source, why)] for source, why in report.failed]
            job.report["notes"] = [[source, _as_source(source, note)] for source, note in report.notes]
            failed = (f"; {len(report.failed)} failed: " + "; ".join(r for _, r in job.report["failed"][:3])
                      if report.failed else "")
            counts = (f"{job.collection}: added {report.added}, updated {report.updated}, unchanged "
                      f"{report.unchanged}, removed {report.removed}")
            totals = f" — {info['files']} files, {info['chunks']} chunks"
            job.message = counts + failed + totals
            job.summary = counts + (f"; {len(report.failed)} failed" if report.failed else "") + totals
            job.status = "done"
        except Exception as err:  # noqa: BLE001 - the job reports any failure instead of dying silently
            job.status = "failed"
            job.message = str(err) if isinstance(err, RagError) else f"{type(err).__name__}: {err}"
        finally:
            job.finished = time.time()
            job.done_event.set()

    def job(self, user: str | None, job_id: str) -> Job | EvalJob:
        with self._lock:
            job = self._jobs.get(job_id) or self._eval_jobs.get(job_id)
        if job is None or job.owner not in (self.owner(user), "server"):
            raise IndexNotFound(f"no job {job_id!r}")
        return job

    def jobs(self, user: str | None) -> list[Job]:
        owner = self.owner(user)
        with self._lock:
            return [j for j in self._jobs.values() if j.owner in (owner, "server")]

    def wait(self, job: Job, timeout: float | None = None) -> Job:
        job.done_event.wait(timeout)
        return job

    # -- evaluation ---------------------------------------------------------------------------------
    def evaluate(self, user: str | None, collection: str, *, questions: Sequence[dict] | None = None,
                 make: int = 20, unanswerable: float = 0.3, ks: Sequence[int] | None = None,
                 backend: str | None = None, model: str | None = None, gate_threshold: float | None = None,
                 limit: int | None = None, seed: int = 0, max_new_tokens: int = 128) -> EvalJob:
        """Evaluate a collection in the background (ragapp.eval): the question set given (JSONL rows as dicts),
        or one made from the collection (`make` questions, `unanswerable` of them held out), answered by the
        extractive answer and by `backend`/`model` (the page's current settings), at each k."""
        from ragapp.eval.questions import parse_row
        from ragapp.eval.runner import parse_answerer

        owner = self.owner(user)
        (real,) = self.resolve(user, [collection])
        parsed = None
        if questions is not None:
            if not questions:
                raise InvalidInput("the question set is empty; give questions, or make a set from the collection")
            parsed = [parse_row(row, f"question {i}", f"q{i}") for i, row in enumerate(questions, 1)]
        elif not 1 <= int(make) <= 500:
            raise InvalidInput(f"make between 1 and 500 questions, not {make}")
        backend = backend or self.default_backend
        if backend not in BACKENDS:
            raise InvalidInput(f"unknown generator backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
        model = (model or "").strip() or None
        answerers = ["extractive"]
        if backend != "extractive":
            answerers.append(parse_answerer(f"{backend}:{model}" if model else backend).spec)
        ks = [int(k) for k in (ks or [self.config.k])]
        with Index.open(real, self.config.index_dir) as index:
            embedder_name = index.embedder_name
        job_id = uuid.uuid4().hex[:12]
        what = f"{len(parsed)} questions given" if parsed is not None else f"{make} questions made from the collection"
        job = EvalJob(job_id, owner, collection, what, self.config.index_dir / EVALS / job_id)
        with self._lock:
            self._eval_jobs[job.id] = job
            while len(self._eval_jobs) > 50:
                self._eval_jobs.popitem(last=False)

        def work() -> None:
            from ragapp.eval.make_set import make_question_set
            from ragapp.eval.questions import save_jsonl
            from ragapp.eval.runner import run

            embedder = self.embedder_for(embedder_name)
            generators = {}
            if len(answerers) > 1:
                job.stage = "loading the generator"
                generators[answerers[1]] = self.session(backend, model, embedder_name).generator
            items = parsed
            if items is None:
                job.stage = "writing questions"

                def wrote(done: int, total: int) -> None:
                    job.done, job.total = done, total

                made = make_question_set(real, self.config.index_dir, n=int(make), unanswerable=float(unanswerable),
                                         seed=seed, embedder=embedder, work_dir=job.out_dir / "cache" / "indexes",
                                         progress=wrote)
                items = made.questions
            save_jsonl(items, job.out_dir / "question-set.jsonl")

            def step(done: int, total: int, what: str) -> None:
                job.done, job.total, job.stage = done, total, f"answering: {what}"

            report = run(items, index=real, index_dir=self.config.index_dir, out_dir=job.out_dir,
                         work_dir=job.out_dir / "cache", ks=ks, answerers=answerers, gate_threshold=gate_threshold,
                         max_new_tokens=max_new_tokens, limit=limit, seed=seed, embedder=embedder,
                         generators=generators, progress=False, on_progress=step, stop=job.stop)
            job.report = report.to_dict()
            job.report["index"] = collection  # the user's name for it, not the server's
            job.markdown = report.markdown().replace(f"index '{real}'", f"collection '{collection}'")
            files = {**report.files, "question_set": str(job.out_dir / "question-set.jsonl")}
            job.files = {Path(p).name: p for p in files.values()}
            job.message = f"{collection}: {report.questions} questions, {len(report.rows)} configurations"

        self._eval_pool.submit(self._run_eval, job, work)
        return job

    def _run_eval(self, job: EvalJob, work) -> None:
        if job.done_event.is_set():
            return
        job.started, job.status = time.time(), "running"
        try:
            work()
            job.status, job.stage = "done", "done"
        except Exception as err:  # noqa: BLE001 - the job reports any failure instead of dying silently
            job.status = "failed"
            job.message = str(err) if isinstance(err, RagError) else f"{type(err).__name__}: {err}"
        finally:
            job.finished = time.time()
            job.done_event.set()

    def eval_file(self, user: str | None, job_id: str, name: str) -> Path:
        """A file an evaluation wrote (report.md, charts, questions.jsonl...), for download."""
        job = self.job(user, job_id)
        path = getattr(job, "files", {}).get(name)
        if path is None:
            have = ", ".join(sorted(getattr(job, "files", {}))) or "none yet"
            raise IndexNotFound(f"no file {name!r} in job {job_id!r}; its files: {have}")
        return Path(path)

    # -- start and stop ----------------------------------------------------------------------------
    def start(self) -> list[str]:
        """Finish what a previous run left: partial uploads, uploads not yet indexed; index --folder.
        Returns lines for the console."""
        notes = []
        uploads = self.config.index_dir / UPLOADS
        for real in list_indexes(self.config.index_dir):
            folder = uploads / real
            clear_partial(folder)
            files = sorted(p for p in folder.glob("*") if p.is_file()) if folder.is_dir() else []
            if not files:
                continue
            with Index.open(real, self.config.index_dir) as index:
                known = {f["source"] for f in index.files()}
            missing = [p for p in files if p.name not in known]
            if missing:
                owner = real.split(SEP, 1)[0] if self.auth and SEP in real else "server"

                def work(index, paths=missing, base=folder):
                    return index.add_files(paths, base=base, embedder=self.embedder_for(index.embedder_name),
                                           file_timeout=self.config.file_timeout)

                self._submit(owner, self.display_name(owner, real), real, f"{len(missing)} interrupted uploads", work)
                notes.append(f"resuming {len(missing)} upload(s) into {real!r} interrupted by the last shutdown")
        if self.config.folder is not None:
            name = self.config.collections[0]
            job = self.index_folder(None, name, self.config.folder, trusted=True)
            notes.append(f"indexing {self.config.folder} into {name!r} in the background (job {job.id})")
        return notes

    def close(self, timeout: float | None = None) -> None:
        """Stop indexing, without waiting for it to finish: the running job stops at its next
        check (ragapp.index.sync.stop_when: within one file or one slice of embeddings), queued ones
        never start; all end "failed" (interrupted), which also answers the requests waiting for
        them. Nothing is lost: every commit holds whole files, so the index is as after a kill;
        start() resumes the uploads not indexed yet, and a folder is synced again incrementally.
        Waits up to `timeout` seconds (None: as long as it takes) for the running job to stop.
        May be called more than once (`ragapp serve` calls it when shutdown begins, and at exit)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            jobs = list(self._jobs.values())
            evals = list(self._eval_jobs.values())
        for job in jobs + evals:
            job.stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._eval_pool.shutdown(wait=False, cancel_futures=True)
        for ej in evals:  # a running one stops after its current answer; the answers kept let it resume
            if ej.status == "queued":
                ej.interrupted("the evaluation was cancelled by the server's shutdown; start it again")
        for job in jobs:
            if job.status == "queued":
                job.interrupted(f"indexing {job.what} into {job.collection!r} was cancelled by the server's shutdown; "
                                "index it again (uploads resume by themselves when the server starts)")
        for job in jobs:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not job.done_event.wait(left):
                break
