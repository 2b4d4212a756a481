"""How much a zip file (a .docx) unzips to, checked before any parser inflates it whole.

A few kilobytes of deflate can expand to gigabytes (a "zip bomb"); python-docx reads every part
of the package into memory before it parses anything. So the archive is refused when the sizes
its directory declares add up to more than the limit, and, since a directory can lie, when
inflating it (streamed, a megabyte at a time, nothing kept) goes past the limit.
"""

from __future__ import annotations

import io
import zipfile

BLOCK = 1 << 20  # bytes inflated at a time while counting


class TooLargeUnzipped(ValueError):
    def __init__(self, size: int, limit: int):
        super().__init__(f"unzips to over {limit} bytes ({size}+)")
        self.size, self.limit = size, limit


def check_unzipped_size(data: bytes, limit: int) -> None:
    """Raise TooLargeUnzipped if the archive in `data` holds more than `limit` bytes once inflated;
    zipfile.BadZipFile (or another error of zipfile) if it is not a valid archive."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = archive.infolist()
        declared = sum(m.file_size for m in members)
        if declared > limit:
            raise TooLargeUnzipped(declared, limit)
        total = 0
        for member in members:
            with archive.open(member) as stream:
                while block := stream.read(BLOCK):
                    total += len(block)
                    if total > limit:
                        raise TooLargeUnzipped(total, limit)
