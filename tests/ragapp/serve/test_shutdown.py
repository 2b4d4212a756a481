"""SIGTERM stops `ragapp serve` within seconds while it indexes, and the next start finishes the job.

The server runs in its own process, started through ragapp.cli like `ragapp serve`, with one
change: the fake embedder of conftest stands in for MiniLM, slowed down to RAGAPP_TEST_DELAY
seconds a chunk, so that an upload takes long enough to be caught in the middle; and commits come
every 32 chunks (about one file), so that it is caught with some files committed and some not.

When the signal comes, the page is open (its Gradio heartbeat stream) and the upload request is
still waiting for its job (POST /v1/documents?wait=true): connections that never end on their
own, on which uvicorn used to wait for ever.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from conftest import ROOT, FakeEmbedder, sentences, write_files

from ragapp.index.index import Index

FILES = 20  # the most one upload takes by default
SERVE = """
import os, sys
sys.path.insert(0, {tests!r})
from conftest import FakeEmbedder, minilm_tokenizer
import ragapp.ingest.embed, ragapp.index.sync
tokenizer, delay = minilm_tokenizer(), float(os.environ["RAGAPP_TEST_DELAY"])
ragapp.ingest.embed.load_embedder = lambda name, *args, **kwargs: FakeEmbedder(tokenizer, delay=delay)
ragapp.index.sync.EMBED_GROUP = 32
from ragapp.cli import main
sys.exit(main(["serve", *sys.argv[1:]]))
"""


def start_server(tmp_path: Path, delay: float, log: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = SERVE.format(tests=str(ROOT / "tests"))
    # stderr to a file: a pipe nobody reads would fill up with the progress bar and block the server
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, "--host", "127.0.0.1", "--port", str(port), "--backend", "extractive",
             "--index-dir", str(tmp_path / "idx")],
            cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1", "RAGAPP_TEST_DELAY": str(delay)},
            stdout=subprocess.DEVNULL, stderr=err)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"the server did not start in 90 s:\n{log.read_text()}"
        try:
            if httpx.get(f"{url}/v1/collections", timeout=5).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)


def listed(url: str) -> list[dict]:
    r = httpx.get(f"{url}/v1/documents/notes", timeout=10)
    return r.json()["files"] if r.status_code == 200 else []


def stop(proc: subprocess.Popen) -> float:
    """SIGTERM; seconds until the process was gone (at most 30: then it is killed)."""
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)
    return time.monotonic() - t0


def test_sigterm_stops_indexing_server_and_the_next_start_finishes_the_upload(tmp_path, tokenizer):
    docs = write_files(tmp_path / "docs", {f"doc{i:02d}.md": sentences(i, 400) for i in range(FILES)})
    paths = sorted(docs.iterdir())

    # 1. Upload 20 files (about 25 chunks each, 0.05 s a chunk: ~25 s of indexing), the page open.
    proc, url = start_server(tmp_path, delay=0.05, log=tmp_path / "serve1.log")
    answers: dict[str, object] = {}

    def upload():
        try:
            r = httpx.post(f"{url}/v1/documents?wait=true", data={"collection": "notes"}, timeout=120,
                           files=[("files", (p.name, p.read_bytes(), "text/markdown")) for p in paths])
            answers["upload"] = (r.status_code, r.json().get("detail", ""))
        except httpx.HTTPError as err:
            answers["upload"] = err

    def page():
        try:
            with httpx.stream("GET", f"{url}/gradio_api/heartbeat/shutdowntest", timeout=120) as r:
                for _ in r.iter_lines():
                    pass
        except httpx.HTTPError:
            pass

    threads = [threading.Thread(target=f, daemon=True) for f in (upload, page)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while len(done := listed(url)) < 3:
            assert time.monotonic() < deadline, "the upload was not being indexed after 60 s"
            time.sleep(0.1)
        assert len(done) < FILES, "the upload was indexed before the test could stop the server"
        took = stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert took <= 10, f"the server took {took:.1f} s to stop on SIGTERM while indexing"
    for t in threads:
        t.join(timeout=10)
    # the waiting request was answered, not dropped: the job was interrupted
    assert isinstance(answers.get("upload"), tuple), answers
    status, detail = answers["upload"]
    assert status == 400 and "interrupted by the server's shutdown" in detail, answers
    with Index.open("notes", tmp_path / "idx") as index:
        committed = len(index.files())
    assert 3 <= committed < FILES

    # 2. Start again, quickly now: the files not indexed yet are, the others are left alone.
    proc, url = start_server(tmp_path, delay=0.0, log=tmp_path / "serve2.log")
    try:
        deadline = time.monotonic() + 60
        while len(files := listed(url)) < FILES:
            assert time.monotonic() < deadline, f"the upload was not finished after 60 s: {len(files)} files"
            time.sleep(0.2)
        assert stop(proc) <= 10
    finally:
        if proc.poll() is None:
            proc.kill()
    assert f"resuming {FILES - committed} upload(s) into 'notes'" in (tmp_path / "serve2.log").read_text()

    # 3. Exactly what one uninterrupted upload makes: each file once, with its chunks, none twice.
    with Index.create("ref", tmp_path / "ref", embedder=FakeEmbedder(tokenizer)) as ref:
        ref.add_files(paths, base=docs, embedder=FakeEmbedder(tokenizer), progress=False)
        want = {f["source"]: (f["chunks"], f["hash"]) for f in ref.files()}
        want_chunks = ref.info()["chunks"]
    assert sorted(f["source"] for f in files) == sorted(want)
    assert {f["source"]: (f["chunks"], f["hash"]) for f in files} == want
    with Index.open("notes", tmp_path / "idx") as index:
        assert index.info()["chunks"] == want_chunks
        ids = sorted(index.store.chunk_ids().tolist())
        assert len(ids) == len(set(ids)) == want_chunks
        assert sorted(index.vectors().ids().tolist()) == ids
