"""Load test: concurrent chat sessions against `ragapp serve` on 127.0.0.1, for a bounded time.

    nice -n 10 python benchmarks/bench_load.py                      # 20 sessions, 120 s, the default generator
    python benchmarks/bench_load.py --sessions 5 --seconds 30 --backend extractive --no-write

It indexes corpora/sample into a temporary folder, starts `ragapp serve` in a subprocess (its own
process, as in real use) and runs N sessions in threads. Each session asks questions about the
sample corpus, and every other one is a follow-up ("And ...?") that needs the conversation. Every
request is a streamed OpenAI-style chat completion (--via api) or a call of the page's chat event
through gradio_client (--via gradio, which goes through Gradio's queue). Measured per answer:
time to the first streamed text and to the end. An error is a non-200 answer, an error event, a
missing final answer, or an exception. Writes its table into BENCHMARKS.md (section "load").
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

QUESTIONS = [
    ("How do I keep an index in step with a folder?", "And what happens to files I delete?"),
    ("Which file formats can ragapp read?", "And how are scanned PDFs handled?"),
    ("What does the grounding gate do?", "And when does it abstain?"),
    ("How do I start the web page?", "And which port does it use?"),
    ("What is hybrid retrieval?", "And how are the two scores fused?"),
    ("Who won the football world cup in 1954?", "And who was the coach?"),  # not in the documents
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(index_dir: Path, backend: str | None, port: int) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    subprocess.run([sys.executable, "-m", "ragapp.cli", "index", str(ROOT / "corpora" / "sample"), "--name", "sample",
                    "--index-dir", str(index_dir), "--no-progress"], check=True, env=env, cwd=ROOT)
    cmd = [sys.executable, "-m", "ragapp.cli", "serve", "--index", "sample", "--index-dir", str(index_dir),
           "--port", str(port)] + (["--backend", backend] if backend else [])
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()
    import httpx

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("the server exited:\n" + "".join(lines))
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/collections", timeout=2).status_code == 200:
                proc.log = lines  # type: ignore[attr-defined]
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("the server did not answer within 300 s")


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.first: list[float] = []
        self.total: list[float] = []
        self.errors: list[str] = []
        self.abstained = 0

    def ok(self, first: float, total: float, abstained: bool):
        with self.lock:
            self.first.append(first)
            self.total.append(total)
            self.abstained += abstained

    def error(self, what: str):
        with self.lock:
            self.errors.append(what)


def api_session(url: str, sid: int, stop_at: float, stats: Stats, timeout: float) -> None:
    import httpx

    with httpx.Client(base_url=url, timeout=timeout) as client:
        turn = sid
        while time.monotonic() < stop_at:
            first_q, follow_q = QUESTIONS[turn % len(QUESTIONS)]
            history: list[dict] = []
            for q in (first_q, follow_q):
                if time.monotonic() >= stop_at:
                    return
                messages = history + [{"role": "user", "content": q}]
                t0 = time.perf_counter()
                first = None
                final = None
                try:
                    with client.stream("POST", "/v1/chat/completions",
                                       json={"model": "sample", "stream": True, "messages": messages}) as r:
                        if r.status_code != 200:
                            stats.error(f"HTTP {r.status_code}")
                            break
                        for line in r.iter_lines():
                            if not line.startswith("data: ") or line == "data: [DONE]":
                                continue
                            event = json.loads(line[6:])
                            if "error" in event:
                                stats.error(event["error"]["message"][:80])
                                break
                            if first is None and event["choices"][0]["delta"].get("content"):
                                first = time.perf_counter() - t0
                            if event["choices"][0]["finish_reason"] == "stop":
                                final = event
                except Exception as err:  # noqa: BLE001 - every failure is counted
                    stats.error(f"{type(err).__name__}: {err}"[:80])
                    break
                if final is None:
                    stats.error("no final answer")
                    break
                total = time.perf_counter() - t0
                stats.ok(first if first is not None else total, total, final["ragapp"]["abstained"])
                history = messages + [{"role": "assistant", "content": final["ragapp"]["text"]}]
            turn += 1


def gradio_session(url: str, sid: int, stop_at: float, stats: Stats, timeout: float) -> None:
    from gradio_client import Client

    client = Client(url, verbose=False)
    try:
        turn = sid
        while time.monotonic() < stop_at:
            for q in QUESTIONS[turn % len(QUESTIONS)]:  # the session's State holds the conversation
                if time.monotonic() >= stop_at:
                    return
                t0 = time.perf_counter()
                first = None
                try:
                    job = client.submit(q, ["sample"], 5, None, "", 0.0, True, api_name="/chat")
                    for _ in job:
                        if first is None:
                            first = time.perf_counter() - t0
                    text, _ = job.result(timeout=timeout)
                except Exception as err:  # noqa: BLE001
                    stats.error(f"{type(err).__name__}: {err}"[:80])
                    break
                total = time.perf_counter() - t0
                stats.ok(first if first is not None else total, total, text.startswith("⊘"))
            turn += 1
    finally:
        client.close()


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q)) if values else float("nan")


def run(url: str, via: str, sessions: int, seconds: float, timeout: float) -> tuple[Stats, float]:
    stats = Stats()
    session = api_session if via == "api" else gradio_session
    start = time.monotonic()
    stop_at = start + seconds
    threads = [threading.Thread(target=session, args=(url, i, stop_at, stats, timeout), daemon=True)
               for i in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + timeout + 30)
    return stats, time.monotonic() - start


VIA = {"api": "OpenAI-compatible API, streamed (httpx)", "gradio": "the page's chat event (gradio_client, Gradio queue)"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=120.0, help="per run; no new question after this (answers in flight finish)")
    ap.add_argument("--backend", choices=("llm", "hf", "openai", "extractive"),
                    help="generator of the server (default: the server's default: the shipped model, else extractive)")
    ap.add_argument("--via", choices=("api", "gradio", "both"), default="both")
    ap.add_argument("--url", help="load an already running server instead (it must serve the 'sample' collection)")
    ap.add_argument("--timeout", type=float, default=600.0, help="per answer")
    ap.add_argument("--no-write", action="store_true", help="print the table only")
    args = ap.parse_args()

    tmp = tempfile.TemporaryDirectory()
    proc = None
    url = args.url
    if url is None:
        port = free_port()
        proc = start_server(Path(tmp.name) / "indexes", args.backend, port)
        url = f"http://127.0.0.1:{port}"
    results = []
    try:
        import httpx

        # warm-up: the models load on the first question
        httpx.post(f"{url}/v1/chat/completions", timeout=args.timeout,
                   json={"model": "sample", "messages": [{"role": "user", "content": QUESTIONS[0][0]}]})
        chunks = next(c["chunks"] for c in httpx.get(f"{url}/v1/collections").json()["collections"] if c["name"] == "sample")
        for via in (("api", "gradio") if args.via == "both" else (args.via,)):
            results.append((via, *run(url, via, args.sessions, args.seconds, args.timeout)))
        backend = args.backend or "the server's default"
        if proc is not None:
            note = [ln for ln in proc.log if ln.startswith("note:")]  # type: ignore[attr-defined]
            backend = "extractive (no default model was found)" if note else (args.backend or "llm (the shipped model)")
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        tmp.cleanup()

    from benchmarks._report import machine, publish

    rows = [
        f"Load test: {args.sessions} concurrent chat sessions, {args.seconds:.0f} s per run, against `ragapp serve` "
        f"(its own process) on 127.0.0.1, over corpora/sample ({chunks} chunks); generator: {backend}; retrieval: "
        f"hybrid, k=5, real MiniLM; {machine()}, shared with other jobs. Each session alternates a question and a "
        "follow-up; one pair in six is not answerable from the corpus. Latency is per answer, in the client. "
        "Remake: `nice -n 10 python benchmarks/bench_load.py`.",
        "",
        "| via | answers | errors | abstained | answers/min | first text p50 | first text p95 | answer p50 | answer p95 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    errors = []
    for via, stats, wall in results:
        n = len(stats.total)
        rows.append(f"| {VIA[via]} | {n} | {len(stats.errors)} | {stats.abstained} | {n / wall * 60:.0f} | "
                    f"{percentile(stats.first, 50):.2f} s | {percentile(stats.first, 95):.2f} s | "
                    f"{percentile(stats.total, 50):.2f} s | {percentile(stats.total, 95):.2f} s |")
        errors += stats.errors
    if errors:
        kinds = sorted(set(errors))
        rows += ["", "Errors: " + "; ".join(f"{k} ×{errors.count(k)}" for k in kinds[:5])]
    table = "\n".join(rows)
    publish("load", table, write=not args.no_write)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
