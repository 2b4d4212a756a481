"""The `ragapp` command: index folders, search them, ask, evaluate, serve; inspect and remove indexes.

Each subcommand is two functions, `<name>_args(parser)` adding its flags and `<name>_run(args)`
doing the work and returning an exit code, plus one line in COMMANDS. Heavy packages (torch,
faiss, transformers, sentence-transformers) are imported inside the run functions, so that
`ragapp --help` answers instantly.

Errors are converted here, at the edge: a RagError prints its message on stderr and exits 1;
bad usage exits 2 (argparse); Ctrl-C exits 130 after saying how to resume.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ragapp import __version__
from ragapp.config import DEFAULT_FILE_TIMEOUT_S, DEFAULT_INDEX_DIR, DEFAULT_K, RETRIEVAL_MODES
from ragapp.errors import InvalidInput, RagError


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def _add_index_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index-dir", type=Path, default=DEFAULT_INDEX_DIR, metavar="DIR",
                   help=f"folder holding the indexes (default: {DEFAULT_INDEX_DIR}; env RAGAPP_INDEX_DIR)")


def _log_line(message: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# ragapp index


def index_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", type=Path, help="folder of documents (.pdf .txt .md .html .docx), read recursively")
    p.add_argument("--name", help="index name (default: the folder's name)")
    p.add_argument("--embedder", help="sentence-transformers model name or folder, or multilingual-e5-small "
                                      "(bundled, 100 languages: for Chinese and other non-English documents), "
                                      "or all-MiniLM-L6-v2-int8 (bundled, 2.3x faster indexing, slightly less exact), "
                                      "fixed at creation (default: all-MiniLM-L6-v2, bundled)")
    p.add_argument("--chunk-tokens", type=int, help="chunk size in the embedder's tokens, fixed at creation (default: 200)")
    p.add_argument("--overlap", type=int, help="tokens shared by consecutive chunks, fixed at creation (default: 30)")
    p.add_argument("--vector", choices=("flat", "hnsw", "ivfpq"),
                   help="vector index, fixed at creation: flat (exact, default), hnsw (fast approximate), "
                        "ivfpq (compressed, for very large collections)")
    p.add_argument("--max-file-mb", type=float, default=50.0, help="skip files larger than this (default: 50)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="processes parsing files side by side (default: one a core; 0: parse in this process, "
                        "without --file-timeout and --file-memory-mb)")
    p.add_argument("--file-timeout", type=float, default=DEFAULT_FILE_TIMEOUT_S, metavar="SECONDS",
                   help=f"skip a file that takes longer to parse (default: {DEFAULT_FILE_TIMEOUT_S:g})")
    p.add_argument("--file-memory-mb", type=int, metavar="MB",
                   help="memory one parser process may use; a file that needs more is skipped "
                        "(default: half the RAM shared among the workers, at least 1024)")
    p.add_argument("--rebuild", action="store_true",
                   help="re-embed everything (e.g. with a new --embedder); the old index stays usable until the new one is complete")
    p.add_argument("--store", metavar="sqlite|postgresql://USER@HOST/DB",
                   help="where a new collection lives, fixed at creation: sqlite (embedded in the index folder, "
                        "the default) or a PostgreSQL database with pgvector, shared by several servers "
                        "(default: env RAGAPP_DATABASE_URL, else sqlite)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_index_dir(p)


def index_run(args) -> int:
    from ragapp.errors import IndexNotFound
    from ragapp.index.index import Index, check_name, rebuild_index
    from ragapp.ingest.parse_pool import ParseLimits

    folder: Path = args.folder
    if not folder.exists():
        raise InvalidInput(f"{folder}: folder not found")
    if not folder.is_dir():
        raise InvalidInput(f"{folder}: not a folder; pass the folder that holds your documents")
    name = args.name or folder.resolve().name
    try:
        check_name(name)
    except InvalidInput as err:
        raise InvalidInput(f"{err}; pass --name") if not args.name else err from None
    if args.max_file_mb <= 0:
        raise InvalidInput(f"--max-file-mb {args.max_file_mb:g}: must be more than 0")
    max_bytes = int(args.max_file_mb * 1024 * 1024)
    parsing = {"workers": args.workers, "file_timeout": args.file_timeout, "file_memory_mb": args.file_memory_mb}
    ParseLimits(*parsing.values())  # bad values are refused before an index is created
    progress = not args.no_progress
    from ragapp.index.stores import parse_store

    spec = parse_store(args.store) if not (args.index_dir / name / "manifest.json").exists() else {}
    where = spec["url"] if spec.get("kind") == "postgresql" else args.index_dir / name
    print(f"indexing {folder} into '{name}' ({where})", file=sys.stderr)
    if args.rebuild:
        report = rebuild_index(name, folder, args.index_dir, embedder=args.embedder, chunk_tokens=args.chunk_tokens,
                               overlap=args.overlap, vector_kind=args.vector, progress=progress,
                               max_bytes=max_bytes, log=_log_line, store=args.store, **parsing)
        index = Index.open(name, args.index_dir, store=args.store)
    else:
        try:
            index = Index.open(name, args.index_dir, store=args.store)
        except IndexNotFound:
            params = {k: v for k, v in {"embedder": args.embedder, "chunk_tokens": args.chunk_tokens,
                                         "overlap": args.overlap, "vector_kind": args.vector}.items() if v is not None}
            index = Index.create(name, args.index_dir, store=args.store, **params)
        else:
            _check_fixed_settings(index, args)
        report = index.sync(folder, progress=progress, max_bytes=max_bytes, log=_log_line, **parsing)
    info = index.info()
    rate = f", {report.embedded / report.seconds:.0f} chunks/s" if report.embedded and report.seconds else ""
    print(f"{report.summary()}{rate}")
    where = "in the database" if info.get("store") == "postgresql" else "on disk"
    print(f"index '{name}': {info['files']} files, {info['chunks']} chunks, {human_bytes(info['bytes'])} {where}")
    index.close()
    return 0


def _check_fixed_settings(index, args) -> None:
    """Flags that only apply at creation must agree with an existing index."""
    if args.embedder is not None:
        index.check_embedder(args.embedder)
    if args.store is not None:
        from ragapp.index.stores import parse_store

        wanted, built = parse_store(args.store), index.manifest.get("store", {"kind": "sqlite"})
        if wanted != built:
            where = built.get("url", "the embedded sqlite store")
            raise InvalidInput(f"index '{index.name}' lives in {where}; a collection cannot move to --store "
                               f"{args.store}: index it under another --name, or remove it first")
    fixed = {"--chunk-tokens": (args.chunk_tokens, index.manifest["chunking"]["chunk_tokens"]),
             "--overlap": (args.overlap, index.manifest["chunking"]["overlap"]),
             "--vector": (args.vector, index.manifest["vectors"]["kind"])}
    for flag, (given, built) in fixed.items():
        if given is not None and given != built:
            raise InvalidInput(
                f"index '{index.name}' was built with {flag} {built}; pass --rebuild to change it to {given}"
            )


# ---------------------------------------------------------------------------------------------
# ragapp search


def search_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("query", help="what to look for, in plain words")
    p.add_argument("--index", action="append", dest="indexes", metavar="NAME",
                   help="index to search; repeat for several (default: the only index there is)")
    p.add_argument("--k", type=int, default=DEFAULT_K, help=f"passages to show (default: {DEFAULT_K})")
    p.add_argument("--mode", choices=RETRIEVAL_MODES, default="hybrid",
                   help="hybrid: dense vectors and BM25 fused (default); dense; bm25")
    p.add_argument("--mmr", action="store_true", help="diversify results (maximal marginal relevance)")
    p.add_argument("--json", action="store_true", help="print the passages as JSON")
    _add_index_dir(p)


def _default_indexes(args) -> list[str]:
    from ragapp.index.index import list_indexes

    if args.indexes:
        return args.indexes
    have = list_indexes(args.index_dir)
    if len(have) == 1:
        return have
    if not have:
        raise InvalidInput(f"no index in {args.index_dir}; create one with: ragapp index FOLDER --name NAME")
    raise InvalidInput(f"several indexes in {args.index_dir} ({', '.join(have)}); pick with --index NAME")


def search_run(args) -> int:
    if not args.query.strip():
        raise InvalidInput("empty query; pass the words to look for, e.g. ragapp search \"reset a password\"")
    if args.k < 1:
        raise InvalidInput(f"--k {args.k}: must be at least 1")
    from ragapp.index.index import Index
    from ragapp.retrieve.retriever import Retriever

    names = _default_indexes(args)
    for name in names:  # a clear IndexNotFound before any model loads
        Index.open(name, args.index_dir).close()
    passages = Retriever(names, index_dir=args.index_dir).search(args.query, k=args.k, mode=args.mode, mmr=args.mmr)
    if args.json:
        from dataclasses import asdict

        print(json.dumps([asdict(p) for p in passages], indent=2, ensure_ascii=False))
        return 0
    if not passages:
        print("no passage found")
    for rank, p in enumerate(passages, 1):
        where = p.label() + (f"  [{p.collection}]" if len(names) > 1 else "")
        also = [s for s in p.sources if s != p.source]
        print(f"{rank}. {p.score:.4f}  {where}" + (f"  (same text in: {', '.join(also)})" if also else ""))
        snippet = " ".join(p.text.split())
        print(f"   {snippet[:300]}{'…' if len(snippet) > 300 else ''}")
    return 0


# ---------------------------------------------------------------------------------------------
# ragapp info


def info_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="one index (default: a table of all of them)")
    p.add_argument("--files", action="store_true", help="also list the files of the index")
    p.add_argument("--json", action="store_true", help="print as JSON")
    _add_index_dir(p)


def info_run(args) -> int:
    from ragapp.index.index import Index, list_indexes

    if args.name is None:
        rows = []
        for name in list_indexes(args.index_dir):
            with Index.open(name, args.index_dir) as index:
                rows.append(index.info())
        if args.json:
            print(json.dumps(rows, indent=2))
        elif not rows:
            print(f"no index in {args.index_dir}; create one with: ragapp index FOLDER --name NAME")
        else:
            header = ("NAME", "FILES", "CHUNKS", "EMBEDDER", "VECTORS", "SIZE")
            table = [header] + [(r["name"], str(r["files"]), str(r["chunks"]), Path(r["embedder"]).name,
                                 r["vector_kind"], human_bytes(r["bytes"])) for r in rows]
            widths = [max(len(row[i]) for row in table) for i in range(len(header))]
            for row in table:
                print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        return 0
    with Index.open(args.name, args.index_dir) as index:
        info = index.info(vectors=True)
        if args.files:
            info["file_list"] = index.files()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    dim = f" ({info['dim']}-d)" if info["dim"] else ""
    print(f"index      {info['name']}  ({info['path']})")
    print(f"files      {info['files']} ({info['contents']} distinct contents, {info['pages']} pages)")
    print(f"chunks     {info['chunks']}")
    print(f"embedder   {info['embedder']}{dim}")
    print(f"chunking   {info['chunk_tokens']} tokens, overlap {info['overlap']}")
    print(f"vectors    {info['vectors']}")
    print(f"folders    {', '.join(f or '(uploads)' for f in info['folders']) or '-'}")
    print(f"size       {human_bytes(info['bytes'])} {'in the database' if info.get('store') == 'postgresql' else 'on disk'}")
    print(f"created    {info['created']}")
    for f in info.get("file_list", []):
        print(f"  {f['source']}  {f['chunks']} chunks  {human_bytes(f['size'])}")
    return 0


# ---------------------------------------------------------------------------------------------
# ragapp remove


def remove_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="index to remove (or to remove files from, with --file)")
    p.add_argument("--file", action="append", dest="files", metavar="PATH",
                   help="remove only this file from the index (its path as `ragapp info NAME --files` shows it); repeatable")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    _add_index_dir(p)


def _confirm(question: str) -> bool:
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    try:
        answer = input()
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def remove_run(args) -> int:
    from ragapp.index.index import Index, remove_index

    with Index.open(args.name, args.index_dir) as index:
        info = index.info()
        if args.files:
            for f in args.files:  # check every path before asking
                if index.store.file(f) is None:
                    index.remove_files([f])  # raises the "no file ... in index" message
            what = f"{len(args.files)} file(s) from index '{args.name}'"
            if not args.yes and not _confirm(f"Remove {what}?"):
                print("cancelled; nothing removed", file=sys.stderr)
                return 1
            n = index.remove_files(args.files)
            print(f"removed {what} ({n} chunks no longer cited)")
            return 0
    what = f"index '{args.name}' ({info['files']} files, {info['chunks']} chunks, {human_bytes(info['bytes'])})"
    if not args.yes and not _confirm(f"Remove {what}?"):
        print("cancelled; nothing removed", file=sys.stderr)
        return 1
    remove_index(args.name, args.index_dir)
    print(f"removed {what}")
    return 0


# ----------------------------------------------------------------------------- `ragapp ask`


def ask_args(p) -> None:
    from ragapp.generate.registry import BACKENDS

    p.add_argument("question", help="the question, in quotes")
    p.add_argument("--index", action="append", required=True, metavar="NAME", help="index to answer from (repeatable)")
    p.add_argument("--k", type=int, default=DEFAULT_K, help=f"passages to retrieve (default: {DEFAULT_K})")
    p.add_argument("--backend", choices=BACKENDS, default="llm",
                   help="llm: our checkpoint (default: models/ragchat); hf: a Hugging Face model; openai: an "
                        "OpenAI-compatible endpoint (RAGAPP_OPENAI_BASE_URL, RAGAPP_OPENAI_KEY)")
    p.add_argument("--model", help="llm/hf: model folder (or hub id for hf); openai: the served model's name")
    p.add_argument("--no-fallback", action="store_true",
                   help="keep a generated answer that fails the citation check (flagged) instead of quoting passages")
    p.add_argument("--extractive", action="store_true", help="no generator: quote the best-supported passage sentences")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--json", action="store_true", help="print the final answer, passages and checks as JSON")
    p.add_argument("--index-dir", type=Path, default=DEFAULT_INDEX_DIR, metavar="DIR",
                   help=f"folder holding the indexes (default: {DEFAULT_INDEX_DIR}; env RAGAPP_INDEX_DIR)")


def ask_run(args) -> int:
    from dataclasses import asdict

    from ragapp.answer.chat import ChatSession, ChatSettings
    from ragapp.types import Answer

    settings = ChatSettings(k=args.k, temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                            fallback=not args.no_fallback, extractive_only=args.extractive)
    session = ChatSession(args.index, index_dir=args.index_dir, backend=args.backend, model=args.model, settings=settings)
    shown = ""
    final: Answer | None = None
    for item in session.answer_stream(args.question):
        if isinstance(item, Answer):
            final = item
        elif not args.json:
            print(item[len(shown):], end="", flush=True)
            shown = item
    assert final is not None
    if args.json:
        print(json.dumps(asdict(final), indent=2, ensure_ascii=False))
        return 0
    if shown and final.text != shown:
        # the checked answer differs from what was streamed: repaired citations, or a fallback
        print("\n")
        if final.reason:
            print(f"({final.reason})")
        print(final.text)
    elif not shown:
        print(final.text)
        if final.reason:
            print(f"({final.reason})", file=sys.stderr)
    else:
        print()
    if final.unsupported_sentences:
        print("\nNot supported by the cited passages:")
        for s in final.unsupported_sentences:
            print(f"  - {s}")
    if final.passages and not final.abstained:
        print("\nSources:")
        cited = {c.number: c for c in final.citations}
        for n, p in enumerate(final.passages, 1):
            c = cited.get(n)
            snippet = p.text[c.highlight[0]:c.highlight[1]] if c and c.highlight else p.text
            snippet = " ".join(snippet.split())
            snippet = snippet if len(snippet) <= 160 else snippet[:157] + "..."
            mark = "" if c is None else (" (cited)" if c.supported else " (cited, not supporting)")
            print(f"  [{n}] {p.label()}{mark}: {snippet}")
    return 0


# ----------------------------------------------------------------------------- ragapp serve


def serve_args(p) -> None:
    from ragapp.config import DEFAULT_EMBEDDER, DEFAULT_HOST, DEFAULT_PORT
    from ragapp.generate.registry import ANSWER_MODES as BACKENDS

    p.add_argument("--index", action="append", dest="indexes", metavar="NAME", default=[],
                   help="collection to preselect; repeat for several (with --auth: shared read-only with every user)")
    p.add_argument("--folder", type=Path, help="index this folder into the first --index when the server starts "
                                               "(incremental, in the background; the page works meanwhile)")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default: {DEFAULT_HOST}, this machine only; "
                                                        "0.0.0.0 opens it to the network: use --auth)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT})")
    p.add_argument("--backend", choices=BACKENDS, default="llm",
                   help="generator: llm (the shipped default model), hf, openai, or extractive (no model) (default: llm)")
    p.add_argument("--model", help="llm checkpoint folder, Hugging Face folder or hub id, or the served model name (openai)")
    p.add_argument("--auth", type=Path, metavar="FILE", help="users file (python -m ragapp.serve.auth add FILE NAME); "
                                                             "or set RAGAPP_USERS. Each user gets their own collections")
    p.add_argument("--k", type=int, default=DEFAULT_K, help=f"passages retrieved per question (default: {DEFAULT_K})")
    p.add_argument("--embedder", default=DEFAULT_EMBEDDER,
                   help=f"embedder of collections the server creates (--folder, uploads): {DEFAULT_EMBEDDER} (default) "
                        "or multilingual-e5-small (Chinese and other languages), or a sentence-transformers model")
    p.add_argument("--max-upload-mb", type=float, default=50.0, help="largest file accepted by upload (default: 50)")
    p.add_argument("--max-upload-files", type=int, default=20, help="most files in one upload (default: 20)")
    p.add_argument("--file-timeout", type=float, default=DEFAULT_FILE_TIMEOUT_S, metavar="SECONDS",
                   help=f"an uploaded or folder file that takes longer to parse is skipped, with one line in "
                        f"its job's report (default: {DEFAULT_FILE_TIMEOUT_S:g})")
    p.add_argument("--folder-root", type=Path, action="append", dest="folder_roots", metavar="DIR",
                   help="the page may index server folders only under DIR (repeatable). Default: anywhere on "
                        "127.0.0.1 without --auth, nowhere otherwise")
    p.add_argument("--allowed-host", action="append", dest="allowed_hosts", metavar="NAME", default=[],
                   help="a host name users type to reach the server, besides 127.0.0.1, localhost and --host "
                        "(repeatable); requests naming any other Host are refused (DNS rebinding)")
    p.add_argument("--allowed-origin", action="append", dest="allowed_origins", metavar="URL", default=[],
                   help="another site whose pages may call this server (repeatable, e.g. https://intranet.example); "
                        "by default only the server's own page may change anything, and CORS is off")
    _add_index_dir(p)


def _loopback(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def serve_run(args) -> int:
    from ragapp.index.index import Index
    from ragapp.serve.auth import load_users
    from ragapp.serve.service import RagService, ServeConfig
    from ragapp.serve.uploads import UploadLimits

    users = load_users(args.auth)
    if args.folder is not None and not args.folder.is_dir():
        raise InvalidInput(f"--folder {args.folder}: no such folder")
    limits = UploadLimits(max_file_bytes=int(args.max_upload_mb * 1024 * 1024), max_files=args.max_upload_files)
    roots = args.folder_roots if args.folder_roots else (None if users is None and _loopback(args.host) else [])
    config = ServeConfig(index_dir=args.index_dir, collections=list(dict.fromkeys(args.indexes)), folder=args.folder,
                         backend=args.backend, model=args.model, host=args.host, port=args.port, limits=limits,
                         folder_roots=roots, k=args.k, embedder=args.embedder, allowed_hosts=args.allowed_hosts,
                         allowed_origins=args.allowed_origins, file_timeout=args.file_timeout)
    for name in config.collections[1 if args.folder else 0:]:
        Index.open(name, config.index_dir).close()  # IndexNotFound says how to create it
    if not _loopback(args.host) and users is None:
        bar = "!" * 78
        print(f"{bar}\nWARNING: serving on {args.host}:{args.port} WITHOUT LOGIN. Anyone who can reach this machine "
              f"can read,\nupload and delete your documents. Use --auth FILE (python -m ragapp.serve.auth add FILE NAME).\n{bar}",
              file=sys.stderr)
    if args.host in ("0.0.0.0", "::") and not args.allowed_hosts:
        print(f"note: --host {args.host} answers to any host name; name the ones users type with --allowed-host NAME "
              "to refuse DNS-rebinding requests", file=sys.stderr)
    service = RagService(config, users=users)
    note = service.check_generator()
    if note:
        print(f"note: {note}", file=sys.stderr)
    for line in service.start():
        print(line, file=sys.stderr)
    from ragapp.serve.api import run_server

    run_server(service)
    return 0


# ----------------------------------------------------------------------------- ragapp eval


def eval_args(p) -> None:
    p.add_argument("data", nargs="?", type=Path,
                   help="question set: JSONL (question, answers, answerable, source), SQuAD 2.0 JSON, or a BEIR folder; "
                        "leave out with --make")
    p.add_argument("--index", metavar="NAME", help="the index a JSONL set (or --make) is asked of")
    p.add_argument("--make", type=int, metavar="N",
                   help="first make a set of about N questions from --index (no judge model: see README), "
                        "saved as OUT/questions-made.jsonl (or --questions-out) for you to read and edit")
    p.add_argument("--make-only", action="store_true", help="with --make: write the question set and stop")
    p.add_argument("--questions-out", type=Path, metavar="FILE", help="where --make writes the question set")
    p.add_argument("--unanswerable", type=float, default=0.3,
                   help="--make: share of unanswerable questions, made by holding their file out (default: 0.3)")
    p.add_argument("--writer", choices=("template", "generator"), default="template",
                   help="--make: template (offline, default) or generator (the first hf/openai --answerer writes them)")
    p.add_argument("--answerer", action="append", dest="answerers", metavar="SPEC",
                   help="who answers, repeatable: extractive, llm (the default model), llm:FOLDER, hf:MODEL, "
                        "openai:NAME (default: extractive and llm)")
    p.add_argument("--k", default=str(DEFAULT_K), metavar="K[,K...]",
                   help=f"passages retrieved; several compare (e.g. 3,5,10) (default: {DEFAULT_K})")
    p.add_argument("--closed-book", action="store_true", help="also ask each generator with no retrieval at all")
    p.add_argument("--gate-threshold", type=float, help="the gate threshold of the 'gate on' rows (default: calibrated)")
    p.add_argument("--max-new-tokens", type=int, default=128, help="longest generated answer (default: 128)")
    p.add_argument("--limit", type=int, metavar="N", help="ask N questions drawn at random (see --seed)")
    p.add_argument("--seed", type=int, default=0, help="for --make, --limit and the bootstrap (default: 0)")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="report.json, report.md, questions.jsonl and charts (default: evals/NAME); answers are kept "
                        "in DIR/cache, so an interrupted run resumes")
    p.add_argument("--no-charts", action="store_true", help="no PNG charts")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_index_dir(p)


def eval_run(args) -> int:
    if args.data is None and not args.make:
        raise InvalidInput("give a question set (JSONL, SQuAD 2.0 JSON or a BEIR folder), or --make N with --index NAME")
    if args.make and not args.index:
        raise InvalidInput("--make writes questions from one of your indexes; pass --index NAME")
    if args.make and args.data is not None:
        raise InvalidInput("give a question set or --make N, not both")
    try:
        ks = [int(k) for k in str(args.k).split(",") if k.strip()]
    except ValueError:
        raise InvalidInput(f"--k {args.k!r}: give passage counts separated by commas, e.g. 3,5,10") from None
    answerers = args.answerers or ["extractive", "llm"]
    name = args.index or (args.data.stem if args.data else "eval")
    out = args.out or Path("evals") / name
    progress = not args.no_progress
    from ragapp.eval.runner import parse_answerer

    parsed = [parse_answerer(a) for a in answerers]  # bad names are refused before anything is loaded
    data = args.data
    if args.make:
        from ragapp.eval.make_set import make_question_set
        from ragapp.eval.questions import save_jsonl

        generator = None
        if args.writer == "generator":
            spec = next((a for a in parsed if a.backend in ("hf", "openai")), None)
            if spec is None:
                raise InvalidInput("--writer generator needs an instruction-following --answerer (hf:MODEL or openai:NAME)")
            from ragapp.generate.registry import load_generator

            generator = load_generator(spec.backend, spec.model)
        made = make_question_set(args.index, args.index_dir, n=args.make, unanswerable=args.unanswerable,
                                 writer=args.writer, generator=generator, seed=args.seed, work_dir=out / "cache" / "indexes")
        data = save_jsonl(made.questions, args.questions_out or out / "questions-made.jsonl")
        print(f"question set: {made.summary()} -> {data}", file=sys.stderr)
        if args.make_only:
            return 0
    from ragapp.eval.runner import run

    report = run(data, index=args.index, index_dir=args.index_dir, out_dir=out, ks=ks, answerers=answerers,
                 closed_book=args.closed_book, gate_threshold=args.gate_threshold, max_new_tokens=args.max_new_tokens,
                 limit=args.limit, seed=args.seed, progress=progress, charts=not args.no_charts)
    print(report.markdown())
    print(f"written: {', '.join(report.files.values())}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------------------------


@dataclass
class Command:
    name: str
    help: str
    add_args: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS = [
    Command("index", "index a folder, or bring its index up to date (incremental)", index_args, index_run),
    Command("search", "show the passages that best match a query", search_args, search_run),
    Command("ask", "answer a question from indexed documents, with checked citations", ask_args, ask_run),
    Command("info", "list indexes, or describe one", info_args, info_run),
    Command("remove", "delete an index, or some files from it", remove_args, remove_run),
    Command("eval", "measure how often answers are made up: on a question set, or one made from an index", eval_args,
            eval_run),
    Command("serve", "open the chat page and the HTTP API (http://127.0.0.1:7860)", serve_args, serve_run),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ragapp", description="Chat with your documents: index folders, search them, ask questions.")
    parser.add_argument("--version", action="version", version=f"ragapp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.add_args(p)
        p.set_defaults(run=cmd.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except RagError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: everything committed so far is kept; run the same command again to finish",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
