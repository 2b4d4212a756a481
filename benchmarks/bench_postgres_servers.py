"""Two `ragapp serve` processes on one PostgreSQL database (pgserver in a temporary folder), each with its own
--index-dir, both loaded at once by bench_load.py --via api. Prints each load's table; exit status 0 when
neither load saw an error.

    nice -n 10 .venv/bin/python benchmarks/bench_postgres_servers.py [--backend extractive] [--seconds 45]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, seconds: float = 300.0) -> None:
    import httpx

    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/v1/collections", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SystemExit(f"{url} did not answer within {seconds:.0f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", default="extractive", choices=("llm", "hf", "openai", "extractive"))
    ap.add_argument("--sessions", type=int, default=4, help="concurrent chat sessions per server")
    ap.add_argument("--seconds", type=float, default=45.0)
    args = ap.parse_args(argv)

    import pgserver

    pgdata, work = Path(tempfile.mkdtemp(prefix="ragapp-pg-")), Path(tempfile.mkdtemp(prefix="ragapp-two-"))
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    env = {**os.environ, "RAGAPP_DATABASE_URL": server.get_uri(), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    servers: list[subprocess.Popen] = []
    try:
        subprocess.run([PY, "-m", "ragapp.cli", "index", "corpora/sample", "--name", "sample", "--index-dir",
                        str(work / "a"), "--no-progress"], cwd=ROOT, env=env, check=True)
        urls = []
        for name in "ab":  # each server its own index folder: the collection is found in the database
            port = free_port()
            log = open(work / f"{name}.log", "w")
            servers.append(subprocess.Popen([PY, "-m", "ragapp.cli", "serve", "--index", "sample", "--index-dir",
                                             str(work / name), "--port", str(port), "--backend", args.backend],
                                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
            urls.append(f"http://127.0.0.1:{port}")
        for url in urls:
            wait_ready(url)
        loads = [subprocess.Popen([PY, "benchmarks/bench_load.py", "--url", url, "--via", "api", "--sessions",
                                   str(args.sessions), "--seconds", str(args.seconds), "--no-write", "--timeout", "300"],
                                  cwd=ROOT, env=env) for url in urls]
        codes = [p.wait() for p in loads]
        print(f"bench_load exit codes (0: no errors): {codes}", flush=True)
        return 0 if not any(codes) else 1
    finally:
        for p in servers:
            p.terminate()
            p.wait(30)
        server.cleanup()
        shutil.rmtree(pgdata, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
