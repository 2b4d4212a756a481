"""One parser process of ragapp.ingest.parse_pool: reads files into Documents on request, under a memory cap.

The pool starts it as `python -c BOOT FD SYS_PATH` (see parse_pool); it talks over the socket FD
with multiprocessing's Connection (pickled tuples). It imports the loaders and nothing heavier:
the parsers (pypdf, lxml, python-docx, pypdfium2) load on the first file that needs them, and
torch or sentence-transformers never (they are the parent's).

After the setup (memory cap, extra loaders) it answers READY. Requests are (path, max_bytes,
timeout_s); replies are (OK, [Document]) | (FAILED, one-line message) | (NO_MEMORY, None) |
(ERROR, "TypeName: message"). Hangs and crashes get no reply: the pool sees the time run out, or
the process end, and kills or replaces it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

READY, OK, FAILED, NO_MEMORY, ERROR = "ready", "ok", "failed", "memory", "error"
# Exit status of a worker that ran out of memory even to say so.
NO_MEMORY_EXIT = 86

# Run by `python -c`: the parent's sys.path first, so that ragapp (and any module that holds a loader
# registered at run time) imports as it does in the parent.
BOOT = ("import json, sys; sys.path[:] = json.loads(sys.argv[2]); "
        "from ragapp.ingest.parse_worker import main; main(int(sys.argv[1]))")


def main(fd: int) -> None:
    from multiprocessing.connection import Connection

    # Ctrl-C in a terminal reaches the whole process group: the parent decides, and kills us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = Connection(fd)
    setup = conn.recv()
    from ragapp.errors import LoaderError
    from ragapp.ingest import loaders

    loaders.LOADERS.update(setup["loaders"])
    _exit_with_parent()
    _limit_memory(setup["memory_mb"])
    conn.send(READY)
    while True:
        try:
            path, max_bytes, timeout_s = conn.recv()
        except (EOFError, OSError):  # the pool closed: done
            return
        _limit_cpu(timeout_s)
        try:
            reply = (OK, loaders.load_file(Path(path), max_bytes))
        except LoaderError as err:
            reply = (FAILED, str(err))
        except MemoryError:
            reply = (NO_MEMORY, None)
        except Exception as err:  # noqa: BLE001 - a parser's bug is one file's problem
            reply = (ERROR, f"{type(err).__name__}: {err}")
        try:
            conn.send(reply)
        except MemoryError:  # pickling the Documents did not fit
            os._exit(NO_MEMORY_EXIT)
        if reply[0] == NO_MEMORY:
            return  # a parser that hit the cap may have left things half done: the pool starts a fresh one


def _limit_memory(memory_mb: int | None) -> None:
    """Address space of this process at most memory_mb: past it, allocations fail (MemoryError in
    Python, a crash in some C parsers) instead of the machine swapping or the OOM killer choosing
    a victim. Address space, not resident memory, is what a POSIX process can limit; the parsers'
    mapped code counts too (about 100 MB, measured with every parser loaded)."""
    if memory_mb is None:
        return
    try:
        import resource
    except ImportError:  # not POSIX: no cap
        return
    limit = memory_mb * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _limit_cpu(timeout_s: float | None) -> None:
    """A CPU-time limit a little past the pool's wall-time limit for this file: the pool kills a
    worker that runs out of time, so this only ever fires when the pool is gone (killed with its
    process) while a parser spins in C holding the GIL, where the watcher thread cannot run."""
    if timeout_s is None:
        return
    try:
        import resource
    except ImportError:
        return
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = int(usage.ru_utime + usage.ru_stime + 2 * timeout_s + 10)
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard == resource.RLIM_INFINITY or soft <= hard:
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _exit_with_parent() -> None:
    """End this process when the parent dies (kill -9 of `ragapp index`): otherwise a worker busy
    with a slow file would finish it for nobody."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.stack_size(256 * 1024)  # the default 8 MB stack would count against the memory cap
    threading.Thread(target=watch, name="ragapp-parent-watch", daemon=True).start()
