"""Which store a collection lives in: the `--store` value, the manifest's "store" entry, and opening it.

    --store sqlite                      the embedded store in indexes/NAME/ (the default)
    --store postgresql://user@host/db   a PostgreSQL database with pgvector (ragapp.index.postgres)

RAGAPP_DATABASE_URL, when set, is the default for new collections, and the database where
collections are looked up by name when indexes/NAME/ has no manifest: every server started with it
sees the same collections. The manifest of a PostgreSQL collection records the URL without its
password; the password comes from RAGAPP_DATABASE_URL when it names the same database, else from
libpq's usual places (PGPASSWORD, ~/.pgpass).
"""

from __future__ import annotations

import os
from pathlib import Path

from ragapp.errors import InvalidInput

STORE_KINDS = ("sqlite", "postgresql")
ENV_URL = "RAGAPP_DATABASE_URL"
_SCHEMES = ("postgresql://", "postgres://")


def database_url() -> str | None:
    """The database of RAGAPP_DATABASE_URL, or None."""
    return os.environ.get(ENV_URL) or None


def parse_store(value: str | None) -> dict:
    """--store value (None: RAGAPP_DATABASE_URL, else sqlite) → the manifest's "store" entry."""
    if value is None:
        value = database_url() or "sqlite"
    value = value.strip()
    if value == "sqlite":
        return {"kind": "sqlite"}
    if value.startswith(_SCHEMES):
        from ragapp.index.postgres import redact

        return {"kind": "postgresql", "url": redact(value)}
    raise InvalidInput(f"unknown --store {value!r}; use sqlite or a PostgreSQL URL such as "
                       "postgresql://user@host:5432/dbname")


def _with_password(url: str) -> str:
    """The recorded URL, with the password of RAGAPP_DATABASE_URL when that names the same database."""
    from ragapp.index.postgres import redact

    env = database_url()
    return env if env and redact(env) == url else url


def store_url(value: str | None) -> str | None:
    """The URL to connect to for a --store value (password kept), or None for sqlite."""
    if value is None:
        value = database_url()
    if value is None or value.strip() == "sqlite":
        return None
    parse_store(value)  # the same errors as for the manifest
    return value.strip()


def open_store(spec: dict, root: Path):
    """The store a manifest's "store" entry names; a PostgreSQL collection is found by the name of
    its folder (NAME, or .NAME.rebuild while a --rebuild runs)."""
    kind = spec.get("kind", "sqlite")
    if kind == "sqlite":
        from ragapp.index.store import Store

        return Store(Path(root) / "store.sqlite")
    if kind == "postgresql":
        from ragapp.index.postgres import PostgresStore

        return PostgresStore(_with_password(spec["url"]), Path(root).name)
    raise InvalidInput(f"the manifest in {root} names an unknown store {kind!r}; this ragapp knows "
                       f"{', '.join(STORE_KINDS)} (upgrade ragapp?)")
