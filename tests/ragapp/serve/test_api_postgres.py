"""Two `ragapp serve` processes' worth of service (two RagServices, each behind real HTTP) sharing one
PostgreSQL database through RAGAPP_DATABASE_URL, each with its own index folder as on two machines:
what one indexes from an upload, the other lists, searches and chats over without a restart."""

from __future__ import annotations

import httpx
from conftest import FakeEmbedder
from test_api import ScriptedGenerator

from ragapp.serve.api import BackgroundServer
from ragapp.serve.service import RagService, ServeConfig

CATS = b"Cats sleep about sixteen hours a day. Kittens sleep even longer than adult cats."


def test_two_servers_share_a_postgres_collection(tmp_path, tokenizer, pg_url, monkeypatch):
    monkeypatch.setenv("RAGAPP_DATABASE_URL", pg_url)
    services = [RagService(ServeConfig(index_dir=tmp_path / f"machine-{m}" / "indexes", backend="llm"),
                           embedder=FakeEmbedder(tokenizer), generator=ScriptedGenerator()) for m in "ab"]
    with BackgroundServer(services[0]) as url_a, BackgroundServer(services[1]) as url_b, \
            httpx.Client(base_url=url_a, timeout=60) as a, httpx.Client(base_url=url_b, timeout=60) as b:
        assert b.get("/v1/collections").json()["collections"] == []
        r = a.post("/v1/documents", data={"collection": "pets"}, files=[("files", ("cats.md", CATS, "text/markdown"))])
        assert r.status_code == 200 and r.json()["status"] == "done", r.text
        assert [c["name"] for c in b.get("/v1/collections").json()["collections"]] == ["pets"]
        assert [f["source"] for f in b.get("/v1/documents/pets").json()["files"]] == ["cats.md"]
        hits = b.post("/v1/search", json={"query": "how long do cats sleep", "collections": ["pets"], "k": 2}).json()
        assert hits["passages"][0]["source"] == "cats.md"
        r = b.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "How long do cats sleep?"}],
                                                 "collections": ["pets"]})
        assert r.status_code == 200 and "sixteen hours" in r.text, r.text
        assert a.delete("/v1/documents/pets/cats.md").status_code == 200
        hits = b.post("/v1/search", json={"query": "how long do cats sleep", "collections": ["pets"], "k": 2}).json()
        assert hits["passages"] == []
    for service in services:
        service.close()


def test_the_page_works_on_a_postgres_collection(tmp_path, tokenizer, pg_url, monkeypatch):
    """The page's upload, file list and chat over a collection that lives in PostgreSQL."""
    from gradio_client import Client, handle_file

    monkeypatch.setenv("RAGAPP_DATABASE_URL", pg_url)
    service = RagService(ServeConfig(index_dir=tmp_path / "indexes", backend="llm"),
                         embedder=FakeEmbedder(tokenizer), generator=ScriptedGenerator())
    (tmp_path / "cats.md").write_bytes(CATS)
    with BackgroundServer(service) as url:
        client = Client(url, verbose=False)
        status, target = client.predict([handle_file(str(tmp_path / "cats.md"))], "pg-pets",
                                        api_name="/add_documents")
        assert target == "pg-pets" and status.startswith("✓ pg-pets: added 1"), status
        assert service.info(None, "pg-pets")["store"].startswith("postgresql"), service.info(None, "pg-pets")
        answer, panel = client.predict("How long do cats sleep?", ["pg-pets"], 5, "llm", "", 0.0, False,
                                       api_name="/chat")
        assert answer.startswith("Cats sleep about sixteen hours a day") and ">[1]</a>" in answer, answer
        assert "[1] cats.md" in panel
        client.close()
    service.close()
