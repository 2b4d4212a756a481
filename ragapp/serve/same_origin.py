"""Only this server's own pages may change its state: Host allow-list and Origin/Referer checks.

Two attacks from a web page the user happens to visit, on a server without login:
- cross-site writes: a page on evil.example POSTs a multipart form to 127.0.0.1:7860 (a "simple"
  request, so the browser sends it without a CORS preflight) and plants a document;
- DNS rebinding: evil.example's name is re-pointed at 127.0.0.1, so the page's requests reach this
  server as same-origin, carrying `Host: evil.example`.

`SameOriginGuard` refuses both: every request must name an allowed host in its Host header, and a
request that carries an Origin (browsers send it on every cross-origin fetch and on every POST) or,
for a state-changing method without Origin, a Referer, must come from this server's own origin or
an origin trusted with --allowed-origin. Requests with neither header (curl, SDKs, gradio_client)
are not a browser acting for someone else, and pass. Nothing here emits CORS headers: other sites
cannot read the API unless an origin is trusted (then ragapp.serve.api adds CORS for it).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from ragapp.errors import Forbidden
from ragapp.serve.http_status import send_error

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def allowed_hosts(host: str, extra: list[str] | tuple[str, ...] = ()) -> set[str] | None:
    """Host names the server answers to; None (any) when it listens on every address and no
    --allowed-host was given, since the names users type for it are then unknown."""
    extra = [h.strip().lower().strip("[]") for h in extra if h.strip()]
    if host in WILDCARD_HOSTS and not extra:
        return None
    names = set(LOOPBACK_HOSTS) | set(extra)
    if host not in WILDCARD_HOSTS:
        names.add(host.lower().strip("[]"))
    return names


def split_host(value: str) -> tuple[str, str]:
    """("name", "port") of a Host header value or an origin's netloc; IPv6 brackets removed."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        return name, rest.lstrip(":")
    name, _, port = value.partition(":")
    return name, port


def origin_of(url: str) -> tuple[str, str, str] | None:
    """(scheme, host name, port) of an Origin or Referer value; None if it is not an http(s) URL."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    name, port = split_host(parts.netloc.rpartition("@")[2])
    return parts.scheme, name, port or ("443" if parts.scheme == "https" else "80")


class SameOriginGuard:
    """ASGI middleware; see the module docstring. `hosts`: allowed Host names (None: any);
    `origins`: other origins trusted to make requests ("https://intranet.example")."""

    def __init__(self, app, hosts: set[str] | None, origins: list[str] | tuple[str, ...] = ()):
        self.app, self.hosts = app, hosts
        self.origins = {o for o in (origin_of(u) for u in origins) if o}

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        problem = self.problem(scope.get("method", "GET"), headers, scope["type"] == "websocket")
        if problem is None:
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        await send_error(send, Forbidden(problem))

    def problem(self, method: str, headers: dict[str, str], websocket: bool = False) -> str | None:
        """Why the request is refused, or None."""
        host = headers.get("host", "")
        name, port = split_host(host)
        if self.hosts is not None and name not in self.hosts:
            return (f"Host {host!r} is not a name of this server; open it as http://127.0.0.1 or localhost, "
                    "or start the server with --allowed-host NAME for the name you use")
        origin = headers.get("origin")
        source, what = (origin, "Origin") if origin is not None else (headers.get("referer"), "Referer")
        if source is None or (origin is None and method in SAFE_METHODS and not websocket):
            return None  # no browser page behind it (curl, SDKs), or a plain navigation
        parsed = origin_of(source)
        if parsed is None:
            return f"cross-site request refused: {what} {source!r} is not a web page of this server"
        scheme, o_name, o_port = parsed
        if (o_name, o_port) == (name, port or ("443" if scheme == "https" else "80")) or parsed in self.origins:
            return None
        shown = f"{scheme}://{o_name}" + (f":{o_port}" if o_port not in ("80", "443") else "")
        return (f"cross-site request refused: {what} {shown} is not this server ({host}); "
                "start the server with --allowed-origin URL to trust another site")
