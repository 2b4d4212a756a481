"""Parser processes: a file that hangs, crashes its parser or eats memory costs one line and one
worker, never the run; the next file is parsed by a fresh worker."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import hostile_files
import pytest

from ragapp.errors import InvalidInput, LoaderError, RagError
from ragapp.ingest import loaders
from ragapp.ingest.parse_pool import ParseLimits, ParserPool
from ragapp.types import Document

# Generous: the suite runs on a busy 2-core machine; a worker is ready in about 0.2 s there.
SLACK_S = 30


@pytest.fixture
def misbehaving(monkeypatch, tmp_path):
    """Made-up extensions whose parsers hang, crash or eat memory, and one that behaves."""
    for ext, fn in {".hang": hostile_files.hang, ".crash": hostile_files.crash, ".eat": hostile_files.eat_memory,
                    ".fine": hostile_files.fine, ".modules": modules_loaded}.items():
        monkeypatch.setitem(loaders.LOADERS, ext, fn)
    for name in ("x.hang", "x.crash", "x.eat", "x.modules"):
        (tmp_path / name).write_text("whatever")
    (tmp_path / "ok.fine").write_text("parsed by a fresh worker")
    (tmp_path / "ok.txt").write_text("A plain text file, parsed by the real loader.")
    return tmp_path


def modules_loaded(path: Path, data: bytes, source: str) -> list[Document]:
    """The heavy packages a worker has imported (it must have none)."""
    heavy = {"torch", "transformers", "sentence_transformers", "faiss", "numpy"}
    return [Document(" ".join(sorted(m for m in sys.modules if m.split(".")[0] in heavy)), source)]


def expect_error(pool: ParserPool, path: Path, reason: str, within_s: float) -> None:
    start = time.monotonic()
    with pytest.raises(LoaderError) as exc:
        pool.load(path, 10**8)
    assert str(exc.value) == f"{path}: {reason}"
    assert time.monotonic() - start < within_s


def test_a_good_file_is_parsed_as_in_process(misbehaving):
    with ParserPool(ParseLimits(workers=1)) as pool:
        assert pool.load(misbehaving / "ok.txt", 10**8) == loaders.load_file(misbehaving / "ok.txt")
        expect_error(pool, misbehaving / "gone.txt", loaders.NOT_FOUND, SLACK_S)


def test_a_hanging_parser_is_killed_at_the_timeout(misbehaving):
    with ParserPool(ParseLimits(workers=1, timeout_s=1.5)) as pool:
        expect_error(pool, misbehaving / "x.hang", "took over 1.5 s to parse; skipped (raise --file-timeout)",
                     1.5 + SLACK_S)
        assert pool.load(misbehaving / "ok.fine", 10**8)[0].text == "parsed by a fresh worker"


def test_a_crashing_parser_is_reported_with_its_signal(misbehaving):
    with ParserPool(ParseLimits(workers=1)) as pool:
        expect_error(pool, misbehaving / "x.crash", "the parser crashed (signal 11, SIGSEGV); skipped", SLACK_S)
        assert pool.load(misbehaving / "ok.fine", 10**8)[0].text == "parsed by a fresh worker"


def test_a_parser_over_the_memory_cap_is_stopped(misbehaving):
    with ParserPool(ParseLimits(workers=1, memory_mb=400)) as pool:
        expect_error(pool, misbehaving / "x.eat",
                     "ran out of memory while parsing (over 400 MB); skipped (raise --file-memory-mb)", SLACK_S)
        assert pool.load(misbehaving / "ok.fine", 10**8)[0].text == "parsed by a fresh worker"


def test_workers_start_fast_and_never_import_torch(misbehaving):
    import torch  # noqa: F401  (loaded here, in the parent, as when an embedder is in memory)

    start = time.monotonic()
    with ParserPool(ParseLimits(workers=1)) as pool:
        (doc,) = pool.load(misbehaving / "x.modules", 10**8)
        started = time.monotonic() - start
    assert doc.text == ""
    assert started < 10, f"a worker took {started:.1f} s to start and parse a tiny file"


def test_close_wakes_a_thread_waiting_on_a_slow_file(misbehaving):
    pool = ParserPool(ParseLimits(workers=1, timeout_s=None))
    errors = []

    def wait_for_it():
        try:
            pool.load(misbehaving / "x.hang", 10**8)
        except Exception as err:  # noqa: BLE001
            errors.append(err)

    thread = threading.Thread(target=wait_for_it)
    thread.start()
    time.sleep(1.0)
    pool.close()
    thread.join(SLACK_S)
    assert not thread.is_alive() and errors


def test_workers_run_side_by_side(misbehaving):
    """Two slow files take the time of one with two workers (serially they would take 10 s)."""
    with ParserPool(ParseLimits(workers=2, timeout_s=5)) as pool:
        errors: list[Exception] = []

        def load():
            try:
                pool.load(misbehaving / "x.hang", 10**8)
            except LoaderError as err:
                errors.append(err)

        start = time.monotonic()
        threads = [threading.Thread(target=load) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(errors) == 2 and time.monotonic() - start < 2 * 5


def test_a_loader_that_cannot_be_pickled_is_refused(monkeypatch):
    monkeypatch.setitem(loaders.LOADERS, ".lambda", lambda path, data, source: [])
    with pytest.raises(InvalidInput, match=r"the loaders for \.lambda must be module-level functions"):
        ParserPool(ParseLimits(workers=1))


@pytest.mark.parametrize("limits, message", [
    ({"workers": -1}, "--workers -1: must be 0 or more"),
    ({"timeout_s": 0}, "--file-timeout 0: must be more than 0 seconds"),
    ({"memory_mb": 100}, "--file-memory-mb 100: must be at least 256"),
])  # fmt: skip
def test_bad_limits_name_the_flag(limits, message):
    with pytest.raises(InvalidInput, match=message):
        ParseLimits(**limits)


def test_defaults():
    limits = ParseLimits()
    assert limits.n_workers >= 1 and limits.timeout_s == 60 and limits.memory >= 1024


def test_a_worker_that_cannot_start_stops_the_run_with_the_fix(misbehaving, monkeypatch):
    """Not a file's fault, so not one line per file: the run stops and says how to go on."""
    import ragapp.ingest.parse_pool

    monkeypatch.setattr(ragapp.ingest.parse_pool, "BOOT", "import sys; sys.exit(3)")
    with ParserPool(ParseLimits(workers=1)) as pool:
        with pytest.raises(RagError) as exc:
            pool.load(misbehaving / "ok.txt", 10**8)
    assert not isinstance(exc.value, LoaderError)
    assert str(exc.value) == ("a parser process could not start (exit status 3; its error is printed above); "
                              "pass --workers 0 to parse in the indexing process instead")
