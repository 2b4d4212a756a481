"""Evaluation as a server job: POST /v1/eval, GET /v1/jobs/{id} until done, its files; and the page's handler.
The fake embedder and a scripted generator keep it fast (test_browser.py drives the tab in Chromium)."""

from __future__ import annotations

import time

import httpx
import pytest
from conftest import FakeEmbedder

from ragapp.generate.base import Generator
from ragapp.serve.api import BackgroundServer
from ragapp.serve.service import RagService, ServeConfig

FILES = [("normans.md", b"The Normans gave their name to Normandy, a region in France. Rollo was the first ruler of "
                        b"Normandy in 911. The Norman conquest of England began in 1066 under William the Conqueror."),
         ("space.md", b"Apollo 11 landed on the Moon in 1969 with Neil Armstrong. The Hubble telescope was launched "
                      b"in 1990 by the shuttle Discovery."),
         ("rivers.txt", b"The Danube flows through 10 countries before reaching the Black Sea. The Rhine rises in the "
                        b"Swiss Alps and ends in the North Sea near Rotterdam.")]


class Quoter(Generator):
    """Answers with the first sentence of passage 1 and a [1]."""

    name, context_tokens = "quoter", 4096

    def stream(self, messages, *, max_new_tokens=256, temperature=0.0, stop=()):
        user = messages[-1]["content"]
        passage = user.split('"""\n', 1)[1].split("\n", 1)[0] if '"""\n' in user else ""
        yield (passage.split(". ")[0].rstrip(".") + ". [1]") if passage else "The documents do not contain the answer."


@pytest.fixture(scope="module")
def server(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("evalapi")
    service = RagService(ServeConfig(index_dir=root / "indexes", backend="llm", k=3),
                         embedder=FakeEmbedder(tokenizer, dim=256), generator=Quoter())
    with BackgroundServer(service) as url, httpx.Client(base_url=url, timeout=60) as client:
        r = client.post("/v1/documents", data={"collection": "facts"}, files=[("files", f) for f in FILES])
        assert r.status_code == 200, r.text
        yield client, service


def wait(client, job_id, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish")


def test_eval_job_makes_a_set_runs_it_and_serves_its_files(server):
    client, _ = server
    r = client.post("/v1/eval", json={"collection": "facts", "make": 6, "unanswerable": 0.34, "k": [2, 3]})
    assert r.status_code == 202, r.text
    job = wait(client, r.json()["id"])
    assert job["status"] == "done", job["message"]
    assert job["kind"] == "eval" and job["done"] == job["total"] > 0
    labels = [row["label"] for row in job["report"]["rows"]]
    assert "extractive · k=2 · gate on" in labels and "llm · k=3 · gate on + fallback" in labels
    assert {"report.md", "questions.jsonl", "question-set.jsonl", "hallucination.png"} <= set(job["files"])
    assert "collection 'facts'" in job["markdown"]
    png = client.get(f"/v1/jobs/{job['id']}/files/hallucination.png")
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
    assert client.get(f"/v1/jobs/{job['id']}/files/nope.txt").status_code == 404


def test_eval_job_with_given_questions_and_its_errors(server):
    client, _ = server
    questions = [{"question": "When did Apollo 11 land on the Moon?", "answers": ["1969"], "answerable": True,
                  "source": "space.md"},
                 {"question": "Who founded the company?", "answers": [], "answerable": False}]
    r = client.post("/v1/eval", json={"collection": "facts", "questions": questions})
    job = wait(client, r.json()["id"])
    assert job["status"] == "done" and job["report"]["questions"] == 2
    assert job["report"]["retrieval"]["3"]["hit"]["n"] == 1
    bad = client.post("/v1/eval", json={"collection": "facts", "questions": [{"question": "Q?", "answer": "x"}]})
    assert bad.status_code == 400 and "unknown field 'answer'" in bad.json()["detail"]
    assert client.post("/v1/eval", json={"collection": "nope"}).status_code == 404
    assert client.post("/v1/eval", json={"collection": "facts", "k": [0]}).status_code == 400


def test_the_page_handler_returns_table_charts_and_downloads(server):
    from ragapp.serve.ui import EVAL_SOURCES, PageHandlers

    _, service = server
    h = PageHandlers(service)
    status, table, charts, downloads = h.evaluate("facts", EVAL_SOURCES[0], 4, 0.25, "", "2", "extractive", "", None,
                                                  progress=lambda *a, **k: None)
    assert status.startswith("✓") and "| extractive · k=2 · gate off |" in table
    assert charts.count('<img alt="') == 2 and 'src="data:image/png;base64,iVBOR' in charts  # PNG, inline
    assert 'download="questions.jsonl"' in downloads and 'download="question-set.jsonl"' in downloads
    import gradio as gr

    with pytest.raises(gr.Error, match="line 1 is not JSON"):
        h.evaluate("facts", EVAL_SOURCES[1], 4, 0.3, "nope", "2", "extractive", "", None, progress=lambda *a, **k: None)
