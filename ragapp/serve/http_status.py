"""The HTTP status of each user-facing error (ragapp.errors), and the one JSON shape every error
has: {"detail": message}. Used by the API's exception handler and by the request guards, which
answer before a request reaches the API."""

from __future__ import annotations

import json

from ragapp.errors import (
    Busy,
    Forbidden,
    GeneratorError,
    IndexNotFound,
    RagError,
    TooManyAttempts,
    Unauthorized,
    UploadTooLarge,
)

STATUS = [(Unauthorized, 401), (Forbidden, 403), (IndexNotFound, 404), (Busy, 409), (UploadTooLarge, 413),
          (TooManyAttempts, 429), (GeneratorError, 400), (RagError, 400)]


def status_of(err: RagError) -> int:
    return next(code for cls, code in STATUS if isinstance(err, cls))


def headers_of(err: RagError) -> dict[str, str]:
    if isinstance(err, Unauthorized):
        return {"WWW-Authenticate": 'Basic realm="ragapp"'}
    if isinstance(err, TooManyAttempts):
        return {"Retry-After": str(err.retry_after)}
    return {}


async def send_error(send, err: RagError, close: bool = False) -> None:
    """Answer an ASGI request with the error; `close`: drop the connection after it (an upload
    refused mid-way is not read to its end)."""
    body = json.dumps({"detail": str(err)}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in headers_of(err).items()]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status_of(err), "headers": headers})
    await send({"type": "http.response.body", "body": body})
