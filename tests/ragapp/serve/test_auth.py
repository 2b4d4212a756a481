"""Login: scrypt hashes, users files and RAGAPP_USERS, and per-user collections over real HTTP."""

from __future__ import annotations

import io
import os
from types import SimpleNamespace

import httpx
import pytest
from conftest import FakeEmbedder

from ragapp.errors import InvalidInput
from ragapp.serve import auth
from ragapp.serve.auth import Users, hash_password, verify_password


def test_hash_and_verify():
    stored = hash_password("correct horse")
    kind, n, r, p, salt, key = stored.split("$")
    assert (kind, n, r, p) == ("scrypt", "16384", "8", "1")
    assert verify_password("correct horse", stored)
    assert not verify_password("correct horse ", stored)
    assert not verify_password("correct horse", stored.replace(key, key[::-1]))
    assert not verify_password("x", "plain-text")
    assert hash_password("same") != hash_password("same")  # salted


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "the users list is empty; add a user with: python -m ragapp.serve.auth add FILE NAME"),
        ("alice:secret", "users.txt, entry 1: expected NAME:scrypt$... (a hashed password); "
                         "make one with: python -m ragapp.serve.auth add FILE NAME"),
        ("# team\n\nAlice:scrypt$1$2$3$4$5", "users.txt, entry 3: invalid user name 'Alice': use 1-24 lower-case "
                                             "letters, digits or '_', starting with a letter or digit"),
        ("al-ice:scrypt$1$2$3$4$5", "users.txt, entry 1: invalid user name 'al-ice'"),
        ("bob:scrypt$1$2$3$4$5\nbob:scrypt$1$2$3$4$6", "users.txt: user 'bob' is listed twice; keep one line"),
    ],
)
def test_bad_users_files(text, message):
    with pytest.raises(InvalidInput) as info:
        Users.parse(text, "users.txt")
    assert str(info.value).startswith(message)


def test_users_from_env_and_check():
    env = {auth.ENV_VAR: f"alice:{hash_password('a-pw')};bob:{hash_password('b-pw')}  # comment"}
    users = Users.from_env(env)
    assert len(users) == 2 and "alice" in users
    assert users.check("alice", "a-pw") and users.check("alice", "a-pw")  # second time from the cache
    assert not users.check("alice", "b-pw") and not users.check("carol", "a-pw") and not users.check("", "")
    assert Users.from_env({}) is None


def test_missing_users_file(tmp_path):
    with pytest.raises(InvalidInput, match=r"--auth .*nope.txt: file not found; create it with: python -m ragapp.serve.auth add"):
        auth.load_users(tmp_path / "nope.txt")


def test_cli_adds_and_replaces_users(tmp_path, monkeypatch, capsys):
    path = tmp_path / "users.txt"
    monkeypatch.setattr("sys.stdin", io.StringIO("first-pw\n"))
    assert auth.main(["add", str(path), "alice"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("bob-pw\n"))
    assert auth.main(["add", str(path), "bob"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("second-pw\n"))
    assert auth.main(["add", str(path), "alice"]) == 0
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    users = Users.from_file(path)
    assert sorted(users.hashes) == ["alice", "bob"]
    assert users.check("alice", "second-pw") and not users.check("alice", "first-pw") and users.check("bob", "bob-pw")
    assert auth.main(["add", str(path), "Bad Name"]) == 1
    assert "invalid user name 'Bad Name'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- over HTTP


@pytest.fixture(scope="module")
def site(tmp_path_factory, tokenizer):
    from ragapp.index.index import Index
    from ragapp.serve.api import BackgroundServer
    from ragapp.serve.service import RagService, ServeConfig

    root = tmp_path_factory.mktemp("auth")
    embedder = FakeEmbedder(tokenizer)
    handbook = root / "handbook"
    handbook.mkdir()
    (handbook / "rules.md").write_text("Everyone washes their own cup. Meetings end at five.")
    with Index.create("handbook", root / "indexes", embedder=embedder) as index:
        index.sync(handbook, embedder=embedder, progress=False)
    users = Users({"alice": hash_password("a-pw"), "bob": hash_password("b-pw")})
    service = RagService(ServeConfig(index_dir=root / "indexes", collections=["handbook"], backend="extractive",
                                     folder_roots=[]), users=users, embedder=embedder)
    with BackgroundServer(service) as url:
        clients = {name: httpx.Client(base_url=url, timeout=30, auth=(name, f"{name[0]}-pw")) for name in ("alice", "bob")}
        yield SimpleNamespace(url=url, root=root, **clients)
        for c in clients.values():
            c.close()


def _names(client) -> list[str]:
    return [c["name"] for c in client.get("/v1/collections").json()["collections"]]


def test_login_required(site):
    r = httpx.get(f"{site.url}/v1/collections")
    assert r.status_code == 401 and r.headers["www-authenticate"] == 'Basic realm="ragapp"'
    assert r.json()["detail"].startswith("log in: send HTTP Basic credentials")
    r = httpx.get(f"{site.url}/v1/collections", auth=("alice", "b-pw"))
    assert r.status_code == 401 and r.json() == {"detail": "wrong user name or password"}
    r = httpx.get(f"{site.url}/v1/collections", headers={"Authorization": "Bearer alice:a-pw"})  # OpenAI clients
    assert r.status_code == 200


def test_each_user_sees_and_changes_only_their_own(site):
    a, b = site.alice, site.bob
    r = a.post("/v1/documents", data={"collection": "diary"}, files=[("files", ("monday.md", b"I planted tomatoes."))])
    assert r.status_code == 200 and r.json()["collection"] == "diary"
    assert (site.root / "indexes" / "alice--diary").is_dir()
    assert _names(a) == ["handbook", "diary"] and _names(b) == ["handbook"]

    assert b.post("/v1/search", json={"query": "tomatoes", "collections": ["diary"]}).status_code == 404
    assert b.get("/v1/documents/diary").status_code == 404
    assert b.delete("/v1/documents/diary/monday.md").status_code == 404
    assert b.post("/v1/chat/completions", json={"model": "diary", "messages": [{"role": "user", "content": "tomatoes?"}]}
                  ).json() == {"detail": "no collection 'diary'; yours: handbook"}
    # bob's own "diary" is another collection
    assert b.post("/v1/documents", data={"collection": "diary"}, files=[("files", ("b.md", b"Bob likes jazz."))]
                  ).status_code == 200
    hits = b.post("/v1/search", json={"query": "tomatoes jazz", "collections": ["diary"]}).json()["passages"]
    assert [h["source"] for h in hits] == ["b.md"] and hits[0]["collection"] == "diary"
    assert [f["source"] for f in a.get("/v1/documents/diary").json()["files"]] == ["monday.md"]


def test_shared_collections_are_read_only(site):
    hits = site.bob.post("/v1/search", json={"query": "cup", "collections": ["handbook"]}).json()["passages"]
    assert hits[0]["source"] == "rules.md"
    r = site.bob.post("/v1/documents", data={"collection": "handbook"}, files=[("files", ("x.md", b"graffiti"))])
    assert r.status_code == 403
    assert r.json() == {"detail": "collection 'handbook' is shared read-only; upload into a collection of your own"}
    assert site.bob.delete("/v1/documents/handbook/rules.md").status_code == 403


def test_page_needs_login_and_is_per_user(site):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    assert httpx.get(f"{site.url}/config").status_code == 401
    bob = Client(site.url, auth=("bob", "b-pw"), verbose=False)
    try:
        with pytest.raises(AppError, match="no collection 'nope'"):
            bob.predict("What is planted?", ["nope"], 5, "extractive", "", 0.0, False, api_name="/chat")
        answer, _ = bob.predict("Who washes the cups?", ["handbook"], 5, "extractive", "", 0.0, False, api_name="/chat")
        assert "cup" in answer
    finally:
        bob.close()
