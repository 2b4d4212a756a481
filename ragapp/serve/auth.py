"""Optional login for `ragapp serve`: users with scrypt-hashed passwords, from a file or the environment.

A users file has one `name:hash` line per user (`#` starts a comment); the environment variable
RAGAPP_USERS holds the same lines (newline- or `;`-separated). Make a line with

    python -m ragapp.serve.auth add users.txt alice        # asks for the password twice
    python -m ragapp.serve.auth hash                       # prints a hash for RAGAPP_USERS

The hash is `scrypt$N$r$p$salt$key` (base64), from hashlib.scrypt: the standard library's
memory-hard KDF, so no extra dependency. Plain-text passwords are refused.

Each user sees and changes only their own collections (ragapp.serve.service stores them as
`USER--NAME`); the collections the server was started with (`--index`) are shared read-only.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import hashlib
import hmac
import os
import re
import secrets
import sys
import threading
from pathlib import Path

from ragapp.errors import InvalidInput

ENV_VAR = "RAGAPP_USERS"
USER_RE = re.compile(r"^[a-z0-9][a-z0-9_]{0,23}$")  # no "-": "--" separates user and collection
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1  # ~16 MiB, ~50 ms: the usual interactive-login cost


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def hash_password(password: str, salt: bytes | None = None) -> str:
    if not password:
        raise InvalidInput("the password is empty; choose a password")
    salt = salt or secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, key = stored.split("$")
        if kind != "scrypt":
            return False
        want = base64.b64decode(key)
        got = hashlib.scrypt(password.encode("utf-8"), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(want), maxmem=128 * 1024 * 1024)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


def check_username(name: str) -> str:
    if not USER_RE.match(name or ""):
        raise InvalidInput(f"invalid user name {name!r}: use 1-24 lower-case letters, digits or '_', "
                           "starting with a letter or digit")
    return name


class Users:
    """The users who may log in. `check` is what Gradio's `auth=` and the HTTP API call."""

    def __init__(self, hashes: dict[str, str]):
        if not hashes:
            raise InvalidInput("the users list is empty; add a user with: python -m ragapp.serve.auth add FILE NAME")
        self.hashes = dict(hashes)
        self._dummy = hash_password(secrets.token_hex(8))
        # scrypt costs ~50 ms by design; the API checks credentials on every request, so a
        # successful check is remembered (by a keyed digest of the password, never the password).
        self._ok: set[tuple[str, bytes]] = set()
        self._pepper = secrets.token_bytes(16)
        self._lock = threading.Lock()

    @classmethod
    def parse(cls, text: str, origin: str) -> "Users":
        hashes: dict[str, str] = {}
        for lineno, line in enumerate(re.split(r"[\n;]", text), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            name, sep, hashed = line.partition(":")
            name, hashed = name.strip(), hashed.strip()
            if not sep or not hashed.startswith("scrypt$") or hashed.count("$") != 5:
                raise InvalidInput(
                    f"{origin}, entry {lineno}: expected NAME:scrypt$... (a hashed password); "
                    "make one with: python -m ragapp.serve.auth add FILE NAME"
                )
            try:
                check_username(name)
            except InvalidInput as err:
                raise InvalidInput(f"{origin}, entry {lineno}: {err}") from None
            if name in hashes:
                raise InvalidInput(f"{origin}: user {name!r} is listed twice; keep one line")
            hashes[name] = hashed
        return cls(hashes)

    @classmethod
    def from_file(cls, path: Path) -> "Users":
        path = Path(path)
        if not path.is_file():
            raise InvalidInput(f"--auth {path}: file not found; create it with: python -m ragapp.serve.auth add {path} NAME")
        return cls.parse(path.read_text(encoding="utf-8"), str(path))

    @classmethod
    def from_env(cls, environ=os.environ) -> "Users | None":
        text = environ.get(ENV_VAR, "").strip()
        return cls.parse(text, ENV_VAR) if text else None

    def check(self, name: str, password: str) -> bool:
        name, password = str(name or ""), str(password or "")
        digest = hmac.new(self._pepper, password.encode("utf-8"), "sha256").digest()
        with self._lock:
            if (name, digest) in self._ok:
                return True
        stored = self.hashes.get(name)
        ok = verify_password(password, stored or self._dummy) and stored is not None  # same work either way
        if ok:
            with self._lock:
                self._ok.add((name, digest))
        return ok

    def __contains__(self, name: str) -> bool:
        return name in self.hashes

    def __len__(self) -> int:
        return len(self.hashes)


def load_users(path: Path | None) -> Users | None:
    """--auth FILE, else RAGAPP_USERS, else None (no login)."""
    return Users.from_file(path) if path else Users.from_env()


# ----------------------------------------------------------------------------- command line


def _ask_password() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if first != getpass.getpass("again: "):
        raise InvalidInput("the two passwords differ; try again")
    return first


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ragapp.serve.auth", description="Manage ragapp serve users.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    add = sub.add_parser("add", help="add or replace a user in a users file (password from the terminal or stdin)")
    add.add_argument("file", type=Path)
    add.add_argument("name")
    sub.add_parser("hash", help="print a password hash (for RAGAPP_USERS=name:HASH)")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "hash":
            print(hash_password(_ask_password()))
            return 0
        check_username(args.name)
        line = f"{args.name}:{hash_password(_ask_password())}"
        lines = args.file.read_text(encoding="utf-8").splitlines() if args.file.exists() else []
        lines = [ln for ln in lines if ln.split(":", 1)[0].strip() != args.name] + [line]
        tmp = args.file.with_name(f".{args.file.name}.tmp")
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o600)
        os.replace(tmp, args.file)
        print(f"user {args.name!r} saved in {args.file}")
        return 0
    except InvalidInput as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
