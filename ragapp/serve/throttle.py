"""Login throttling: exponential back-off per user name and per client address.

After FREE failed logins in a row, a user name (and, separately, a client address) must wait
before its next try: 1 s, then 2, 4, ... up to CAP seconds, for every try, right or wrong, so a
password cannot be guessed at speed, from one address or many. A success resets both counts.
The cost, as with every lockout: someone who knows a user name can slow that user's logins down
(to one try per CAP seconds at worst); SECURITY.md says so.

The API checks credentials itself (ragapp.serve.api); Gradio's login route calls a plain
(name, password) function and cannot answer 429, so `GradioLoginGuard` wraps that route.
"""

from __future__ import annotations

import io
import math
import threading
import time
from collections import OrderedDict
from urllib.parse import parse_qs

from ragapp.errors import TooManyAttempts, UploadTooLarge
from ragapp.serve.http_status import send_error
from ragapp.serve.upload_guard import replay_body

FREE = 5
BASE = 1.0
CAP = 300.0
MAX_KEYS = 10_000  # memory bound: the least recently failed keys are forgotten first


class LoginThrottle:
    def __init__(self, free: int = FREE, base: float = BASE, cap: float = CAP, clock=time.monotonic):
        self.free, self.base, self.cap, self.clock = free, base, cap, clock
        self._failures: OrderedDict[tuple[str, str], tuple[int, float]] = OrderedDict()  # key -> (count, until)
        self._lock = threading.Lock()

    @staticmethod
    def _keys(user: str, address: str | None) -> list[tuple[str, str]]:
        keys = [("user", str(user or ""))]
        if address:
            keys.append(("address", address))
        return keys

    def wait(self, user: str, address: str | None) -> float:
        """Seconds before this user name from this address may try again (0: now)."""
        now = self.clock()
        with self._lock:
            return max([0.0] + [self._failures.get(k, (0, 0.0))[1] - now for k in self._keys(user, address)])

    def check(self, user: str, address: str | None) -> None:
        """TooManyAttempts (the API answers 429) while the back-off lasts."""
        wait = self.wait(user, address)
        if wait > 0:
            seconds = math.ceil(wait)
            raise TooManyAttempts(f"too many failed logins for {user!r} or from this address; try again in "
                                  f"{seconds} s", retry_after=seconds)

    def failed(self, user: str, address: str | None) -> None:
        now = self.clock()
        with self._lock:
            for key in self._keys(user, address):
                count = self._failures.pop(key, (0, 0.0))[0] + 1
                delay = 0.0 if count <= self.free else min(self.cap, self.base * 2 ** (count - self.free - 1))
                self._failures[key] = (count, now + delay)
            while len(self._failures) > MAX_KEYS:
                self._failures.popitem(last=False)

    def succeeded(self, user: str, address: str | None) -> None:
        with self._lock:
            for key in self._keys(user, address):
                self._failures.pop(key, None)


class GradioLoginGuard:
    """ASGI middleware around Gradio's POST /login: refuses with 429 during the back-off, and
    counts the route's answer (200 logged in, 4xx wrong credentials)."""

    PATHS = ("/login", "/login/")
    MAX_BODY = 16 * 1024

    def __init__(self, app, throttle: LoginThrottle):
        self.app, self.throttle = app, throttle

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.PATHS:
            return await self.app(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.MAX_BODY:
                return await send_error(send, UploadTooLarge("the login form is too large"))
        form = parse_qs(body.decode("utf-8", "replace"))
        user = (form.get("username") or [""])[0].strip()
        address = (scope.get("client") or (None,))[0]
        try:
            self.throttle.check(user, address)
        except TooManyAttempts as err:
            return await send_error(send, err)
        async def counted(message):
            if message["type"] == "http.response.start":
                status = message["status"]
                if status == 200:
                    self.throttle.succeeded(user, address)
                elif 400 <= status < 500:
                    self.throttle.failed(user, address)
            await send(message)

        return await self.app(scope, replay_body(io.BytesIO(body), receive), counted)
