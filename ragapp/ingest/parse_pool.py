"""Parsing in worker processes, so that no file can stall or sink an indexing run.

Each file is parsed (ragapp.ingest.loaders.load_file) in a worker process, within a wall-time
budget and under a memory cap. A worker that runs out of time is killed; one that runs out of
memory, or whose parser crashes (a segfault in C), ends. Either way a fresh worker takes its place
for the next file, the file gets one line naming the cause and the flag that lifts the limit, and
the run goes on.

Why not concurrent.futures.ProcessPoolExecutor: it cannot cancel a task once it runs, nor kill
the one worker running it, and a worker that dies breaks the whole pool (BrokenProcessPool).
Why not multiprocessing.Process: fork is unsafe once torch and the Rust tokenizer run threads;
with spawn or forkserver every child re-imports the caller's __main__ (a script calling
Index.sync without an `if __name__ == "__main__":` guard would run again in each worker); and a
daemonic process may not start children at all (the crash test indexes inside one). So a worker
is a fresh interpreter started with subprocess, running ragapp.ingest.parse_worker, talking over
a socket pair with multiprocessing's Connection. It imports the loaders only, never torch or
sentence-transformers: it is ready in about 0.2 s, paid once per worker per run (and after each
kill), while the parent goes on embedding.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from multiprocessing import Pipe
from pathlib import Path

from ragapp.config import DEFAULT_FILE_TIMEOUT_S
from ragapp.errors import InvalidInput, LoaderError, RagError
from ragapp.ingest.loaders import file_error, registered_loaders
from ragapp.ingest.parse_worker import BOOT, ERROR, FAILED, NO_MEMORY, NO_MEMORY_EXIT, OK, READY
from ragapp.types import Document

TIMEOUT = "took over {seconds:g} s to parse; skipped (raise --file-timeout)"
OUT_OF_MEMORY = "ran out of memory while parsing (over {mb} MB); skipped (raise --file-memory-mb)"
CRASHED = "the parser crashed (signal {number}, {name}); skipped"
KILLED = "the parser was killed (signal 9, SIGKILL: the machine may be out of memory); skipped"
EXITED = "the parser exited unexpectedly (status {status}); skipped"

MIN_MEMORY_MB = 256  # a worker maps about 100 MB of code and data before it reads a file
START_TIMEOUT_S = 60.0  # a worker is ready in well under a second; this only catches a broken setup


def default_workers() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def total_memory_mb() -> int | None:
    """RAM of the machine, or of the container (cgroup v2 limit) when that is lower; None if unknown."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit():
            total = min(total, int(limit))
    except OSError:
        pass
    return total // 2**20


def default_memory_mb(workers: int) -> int:
    """Half the RAM shared among the workers, and at least 1 GB each: most files need tens of MB,
    and the cap is there to stop the one file that would need the whole machine."""
    total = total_memory_mb()
    if total is None:
        return 2048
    return max(1024, total // 2 // max(workers, 1))


@dataclass(frozen=True)
class ParseLimits:
    """How an indexing run parses files: in `workers` processes (None: one a core; 0: in the
    indexing process itself, without either limit), each file within `timeout_s` seconds (None:
    no limit) and `memory_mb` of address space (None: default_memory_mb)."""

    workers: int | None = None
    timeout_s: float | None = DEFAULT_FILE_TIMEOUT_S
    memory_mb: int | None = None

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 0:
            raise InvalidInput(f"--workers {self.workers}: must be 0 or more "
                               "(0 parses in the indexing process itself, without time or memory limits)")
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise InvalidInput(f"--file-timeout {self.timeout_s:g}: must be more than 0 seconds")
        if self.memory_mb is not None and self.memory_mb < MIN_MEMORY_MB:
            raise InvalidInput(f"--file-memory-mb {self.memory_mb}: must be at least {MIN_MEMORY_MB} "
                               "(a parser process needs about 100 MB before it reads a file)")

    @property
    def n_workers(self) -> int:
        return default_workers() if self.workers is None else self.workers

    @property
    def memory(self) -> int:
        return self.memory_mb if self.memory_mb is not None else default_memory_mb(self.n_workers)


class _Worker:
    """One parser process and our end of its socket."""

    def __init__(self, setup: bytes):
        ours, theirs = Pipe()  # a socket pair, both ways
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", BOOT, str(theirs.fileno()), json.dumps([str(p) for p in sys.path])],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                # stdout is the CLI's report; a parser that prints must not write into it
                stdout=subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        self.conn = ours
        try:
            ours.send_bytes(setup)  # memory cap and extra loaders, pickled once by the pool
            if not ours.poll(START_TIMEOUT_S) or ours.recv() != READY:
                raise EOFError
        except (EOFError, OSError):
            status = self.stop()
            raise RagError(
                f"a parser process could not start (exit status {status}; its error is printed above); "
                "pass --workers 0 to parse in the indexing process instead"
            ) from None

    def stop(self) -> int | None:
        """Kill the process (if it still runs), reap it, close our end; its exit status."""
        if self.proc.poll() is None:
            self.proc.kill()
        status = self.proc.wait()
        self.conn.close()
        return status


class ParserPool:
    """Up to `limits.n_workers` parser processes, started as needed; `load` may be called from
    that many threads at once, each getting a worker of its own for the file."""

    def __init__(self, limits: ParseLimits):
        self.limits = limits
        self.memory_mb = limits.memory
        self._setup = self._pickled_setup()
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max(1, limits.n_workers))
        self._closed = False

    def _pickled_setup(self) -> bytes:
        extra = registered_loaders()
        try:
            return pickle.dumps({"memory_mb": self.memory_mb, "loaders": extra})
        except (pickle.PicklingError, AttributeError, TypeError):
            raise InvalidInput(
                f"the loaders for {', '.join(sorted(extra))} must be module-level functions, so that the "
                "parser processes can import them; or parse in the indexing process (workers=0)"
            ) from None

    def __enter__(self) -> ParserPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def load(self, path: Path, max_bytes: int) -> list[Document]:
        """load_file(path, max_bytes) in a worker; LoaderError with the one-line message for a
        file that cannot be read, runs out of time or memory, or crashes its parser."""
        with self._slots:
            worker = self._take()
            timeout = self.limits.timeout_s
            try:
                worker.conn.send((str(path), max_bytes, timeout))
                if not worker.conn.poll(timeout):
                    self._drop(worker)
                    raise file_error(path, TIMEOUT.format(seconds=timeout))
                kind, value = worker.conn.recv()
            except (EOFError, OSError):  # the worker died: its exit status says how
                status = self._drop(worker)
                raise file_error(path, self._death(status)) from None
            if kind == NO_MEMORY:
                self._drop(worker)  # it ends itself after saying so
                raise file_error(path, OUT_OF_MEMORY.format(mb=self.memory_mb))
            self._give_back(worker)
            if kind == OK:
                return value
            if kind == FAILED:
                raise LoaderError(value)
            assert kind == ERROR, kind
            raise file_error(path, value)  # "TypeName: message" of a parser's own exception

    def _death(self, status: int | None) -> str:
        if self._closed:
            return "parsing stopped (the run was interrupted)"
        if status == NO_MEMORY_EXIT:
            return OUT_OF_MEMORY.format(mb=self.memory_mb)
        if status is not None and status < 0:
            if -status == signal.SIGKILL:
                return KILLED
            try:
                name = signal.Signals(-status).name
            except ValueError:
                name = "unknown"
            return CRASHED.format(number=-status, name=name)
        return EXITED.format(status=status)

    def _take(self) -> _Worker:
        with self._lock:
            if self._closed:
                raise RagError("the parser pool is closed")
            if self._idle:
                return self._idle.pop()
        worker = _Worker(self._setup)  # outside the lock: workers start side by side
        with self._lock:
            if self._closed:
                worker.stop()
                raise RagError("the parser pool is closed")
            self._all.add(worker)
        return worker

    def _give_back(self, worker: _Worker) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(worker)
                return
        self._drop(worker)

    def _drop(self, worker: _Worker) -> int | None:
        with self._lock:
            self._all.discard(worker)
        return worker.stop()

    def close(self) -> None:
        """Kill every worker, busy or not: a thread waiting on one wakes up at once (its file is
        reported as interrupted, and nothing of it is committed)."""
        with self._lock:
            self._closed = True
            workers, idle, self._all, self._idle = list(self._all), self._idle, set(), []
        for worker in workers:
            if worker.proc.poll() is None:
                worker.proc.kill()
        for worker in workers:
            worker.proc.wait()
        for worker in idle:  # a busy worker's socket is closed by the thread waiting on it
            worker.conn.close()
