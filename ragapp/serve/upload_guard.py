"""Upload limits enforced while the request body streams, before the app sees any of it.

`UploadGuard` sits in front of every route that takes files (the API's POST /v1/documents and
Gradio's POST /gradio_api/upload). It reads the multipart body itself, checks each part as it
arrives — file count, file type, bytes per file, bytes in all — and keeps the body in a spool
(memory up to SPOOL_MEMORY, then an anonymous temporary file). At the first byte over a limit it
stops reading, answers 413 (400 for a wrong type) with `Connection: close`, and drops the spool:
nothing over the limit is written anywhere. Only a body that passed every check is replayed to
the app.

Why a spool instead of passing bytes through: the app's multipart parsers write each file to
disk as it arrives, and Gradio's leaves its temporary files behind when a request is cut off
mid-way. Replaying a checked body means the app only ever parses requests it will accept.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from python_multipart.multipart import MultipartParser, parse_options_header

from ragapp.errors import IndexNotFound, InvalidInput, RagError, UploadTooLarge
from ragapp.serve.http_status import send_error
from ragapp.serve.uploads import UploadLimits, check_name

SPOOL_MEMORY = 1024 * 1024  # bodies up to this size stay in memory
FIELD_BYTES = 64 * 1024  # a form field that is not a file (the collection name)
HEADER_SLACK = 64 * 1024  # multipart boundaries, part headers and form fields, on top of the files


@dataclass
class _Part:
    filename: str | None = None
    size: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


class _BodyChecker:
    """Feeds a multipart body through python-multipart's streaming parser and raises a RagError at
    the first part or byte over the limits."""

    def __init__(self, boundary: bytes, limits: UploadLimits):
        self.limits = limits
        self.files = 0
        self.total = 0
        self.part = _Part()
        self._field, self._value = b"", b""
        self.error: RagError | None = None
        self.parser = MultipartParser(boundary, {
            "on_part_begin": self._begin, "on_header_field": self._header_field,
            "on_header_value": self._header_value, "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished, "on_part_data": self._data,
        })

    def _begin(self) -> None:
        self.part = _Part()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self.part.headers.append((self._field.lower(), self._value))
        self._field, self._value = b"", b""

    def _headers_finished(self) -> None:
        disposition = dict(self.part.headers).get(b"content-disposition", b"")
        _, options = parse_options_header(disposition)
        if b"filename" not in options:
            return
        name = options[b"filename"].decode("utf-8", "replace")
        self.part.filename = name
        self.files += 1
        if self.files > self.limits.max_files:
            n = self.limits.max_files
            self._refuse(UploadTooLarge(f"more than {n} files in one upload; at most {n} are accepted, upload them in "
                              "several batches (or raise --max-upload-files)"))
        try:
            check_name(name, self.limits)
        except InvalidInput as err:
            self._refuse(err)

    def _data(self, data: bytes, start: int, end: int) -> None:
        self.part.size += end - start
        if self.part.filename is None:
            if self.part.size > FIELD_BYTES:
                self._refuse(UploadTooLarge(f"a form field is over {FIELD_BYTES // 1024} KB; send documents as files"))
        elif self.part.size > self.limits.max_file_bytes:
            self._refuse(UploadTooLarge(f"{Path(self.part.filename).name} is over the "
                                        f"{_mb(self.limits.max_file_bytes)} upload limit; split it or raise --max-upload-mb"))

    def _refuse(self, err: RagError) -> None:
        if self.error is None:
            self.error = err
        raise self.error

    def feed(self, chunk: bytes) -> None:
        """Check a chunk before it is kept; the parts' own limits first, for the clearer message
        (how the body is cut into chunks depends on the network)."""
        try:
            self.parser.write(chunk)
        except RagError:
            raise
        except Exception as err:  # noqa: BLE001 - python-multipart's parse errors
            if self.error is not None:  # our refusal, raised from inside a callback and wrapped
                raise self.error from None
            raise InvalidInput(f"the upload is not a well-formed multipart/form-data body ({err})") from None
        self.total += len(chunk)
        if self.total > self.limits.max_total_bytes + HEADER_SLACK:
            raise _over_total(self.limits)

    def finish(self) -> None:
        try:
            self.parser.finalize()
        except Exception as err:  # noqa: BLE001
            raise InvalidInput(f"the upload is not a well-formed multipart/form-data body ({err})") from None
        if self.files == 0:
            raise InvalidInput("no file in the upload; send documents as multipart form files")


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):g} MB"


def _over_total(limits: UploadLimits) -> UploadTooLarge:
    return UploadTooLarge(f"the upload is over {_mb(limits.max_total_bytes)} in all; upload fewer files at a time")


class UploadGuard:
    """ASGI middleware: POSTs to `paths` are multipart uploads checked against `limits` while they
    arrive (see the module docstring). `upload_folder()`: where Gradio keeps uploads; its file
    route (FILE_ROUTE) never serves them back: the page does not need it, and with login it would
    let anyone who learns a path read another user's upload. Other requests pass through."""

    FILE_ROUTE = "/gradio_api/file="

    def __init__(self, app, paths: tuple[str, ...], limits: UploadLimits, upload_folder=None):
        self.app, self.paths, self.limits, self.upload_folder = app, tuple(paths), limits, upload_folder

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["path"].startswith(self.FILE_ROUTE) and self._is_upload(scope["path"][len(self.FILE_ROUTE):]):
            return await send_error(send, IndexNotFound("not found"))
        if scope["method"] != "POST" or scope["path"] not in self.paths:
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        try:
            checker = self._checker(headers)
            length = headers.get(b"content-length", b"")
            if length.isdigit() and int(length) > self.limits.max_total_bytes + HEADER_SLACK:
                raise _over_total(self.limits)
            spool = await self._read(receive, checker)
        except RagError as err:
            # Connection: close makes the server drop the connection instead of reading the rest of the body.
            return await send_error(send, err, close=True)
        try:
            await self.app(scope, replay_body(spool, receive), send)
        finally:
            spool.close()

    def _is_upload(self, path: str) -> bool:
        if self.upload_folder is None:
            return False
        try:
            return Path(path).resolve().is_relative_to(Path(self.upload_folder()).resolve())
        except (OSError, ValueError):
            return True  # a path that cannot be resolved is refused too

    def _checker(self, headers: dict) -> _BodyChecker:
        kind, options = parse_options_header(headers.get(b"content-type", b""))
        if kind != b"multipart/form-data" or not options.get(b"boundary"):
            raise InvalidInput("an upload must be a multipart/form-data body with a boundary "
                               "(curl -F files=@notes.pdf ...)")
        return _BodyChecker(options[b"boundary"], self.limits)

    @staticmethod
    async def _read(receive, checker: _BodyChecker):
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise InvalidInput("the client left before the upload was complete")
                chunk = message.get("body", b"")
                checker.feed(chunk)  # raises before an over-limit chunk is written
                spool.write(chunk)
                if not message.get("more_body", False):
                    break
            checker.finish()
        except BaseException:
            spool.close()
            raise
        spool.seek(0)
        return spool


def replay_body(body, receive, block: int = 1 << 20):
    """An ASGI `receive` that hands the app a body already read (a file object at its start), then
    the real channel, so the app still learns of a disconnect."""
    size = body.seek(0, 2)
    body.seek(0)
    done = False

    async def replayed():
        nonlocal done
        if done:
            return await receive()
        chunk = body.read(block)
        done = body.tell() >= size
        return {"type": "http.request", "body": chunk, "more_body": not done}

    return replayed
