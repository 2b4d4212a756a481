"""Uploaded files: limits (size, count, types) and safe names inside a collection's upload folder.

A browser or an HTTP client chooses the file name, so the name is untrusted: `../../etc/passwd`,
`/abs/path.md`, `C:\\x.txt`, names with control characters or a leading dot. `safe_filename`
keeps only the last path component, NFKC-normalized, with every character outside a small
allowed set replaced; `save_upload` then writes it atomically and only after checking that the
resolved target is a direct child of the collection's upload folder (not a symlink), so nothing
outside that folder is ever created or overwritten. Re-uploading a name replaces the earlier
upload of that collection, which is how a user updates a document.
"""

from __future__ import annotations

import os
import re
import unicodedata
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ragapp.config import DEFAULT_MAX_FILE_BYTES, SUPPORTED_EXTENSIONS
from ragapp.errors import InvalidInput, UploadTooLarge

MAX_NAME_CHARS = 120
_UNSAFE = re.compile(r"[^\w.\- ()+,@]+")  # \w is Unicode-aware: letters of any script stay
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}


@dataclass
class UploadLimits:
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES  # per file
    max_files: int = 20  # per request
    max_total_bytes: int = 200 * 1024 * 1024  # per request
    extensions: tuple[str, ...] = field(default=SUPPORTED_EXTENSIONS)

    def __post_init__(self) -> None:
        if self.max_file_bytes < 1:
            raise InvalidInput(f"--max-upload-mb must be positive, got {self.max_file_bytes} bytes")
        if self.max_files < 1:
            raise InvalidInput(f"--max-upload-files must be at least 1, got {self.max_files}")
        if self.max_total_bytes < self.max_file_bytes:
            self.max_total_bytes = self.max_file_bytes
        self.extensions = tuple(e.lower() for e in self.extensions)

    def describe(self) -> str:
        return (f"up to {self.max_files} files of at most {_mb(self.max_file_bytes)} each "
                f"({_mb(self.max_total_bytes)} in all); types: {' '.join(self.extensions)}")


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):g} MB"


def safe_filename(name: str) -> str:
    """The last path component of `name`, made safe to create in a folder. InvalidInput if nothing is left."""
    raw = name
    name = unicodedata.normalize("NFKC", str(name or ""))
    name = re.split(r"[/\\]", name)[-1]  # both separators: a Windows browser may send C:\dir\x.pdf
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")  # control, format, surrogate
    name = _UNSAFE.sub("_", name).strip(" .")  # no leading dot (hidden, "..") and no trailing dot/space
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    if stem.lower() in _WINDOWS_RESERVED:
        stem = f"_{stem}"
    ext = ext[:16]
    stem = stem[: MAX_NAME_CHARS - len(ext) - 1].rstrip(" .")
    if not stem:
        raise InvalidInput(f"file name {raw!r} has no usable characters; rename the file, e.g. notes.md")
    return f"{stem}.{ext}" if ext else stem


def check_name(name: str, limits: UploadLimits) -> str:
    """The safe name of an upload, or InvalidInput naming the file and the accepted types."""
    safe = safe_filename(name)
    ext = Path(safe).suffix.lower()
    if ext not in limits.extensions:
        shown = Path(str(name)).name or str(name)
        raise InvalidInput(
            f"{shown}: unsupported file type {ext or '(none)'!r}; upload one of: {' '.join(limits.extensions)}"
        )
    return safe


def check_batch(names: list[str], limits: UploadLimits) -> list[str]:
    """Safe names for a batch: count limit, types, and no two files mapping to the same name."""
    if not names:
        raise InvalidInput("no file to upload; choose one or more documents")
    if len(names) > limits.max_files:
        raise UploadTooLarge(f"{len(names)} files in one upload; at most {limits.max_files} are accepted, "
                             "upload them in several batches (or raise --max-upload-files)")
    safe = [check_name(n, limits) for n in names]
    seen: dict[str, str] = {}
    for original, s in zip(names, safe):
        if s.lower() in seen:
            raise InvalidInput(f"{seen[s.lower()]!r} and {original!r} would both be saved as {s!r}; rename one")
        seen[s.lower()] = original
    return safe


def _target(folder: Path, safe_name: str) -> Path:
    folder = folder.resolve()
    target = folder / safe_name
    if target.parent != folder or target.name != safe_name or target.is_symlink():
        raise InvalidInput(f"refusing to write {safe_name!r} outside the upload folder")
    if target.exists() and not target.is_file():
        raise InvalidInput(f"{safe_name!r} exists in the upload folder and is not a file; rename the upload")
    return target


def _write_part(source: BinaryIO | Path, folder: Path, safe_name: str, limits: UploadLimits, budget: list[int]) -> Path:
    """Copy `source` into a temporary file of `folder`, enforcing the per-file and per-request limits."""
    tmp = folder / f".upload-{uuid.uuid4().hex}.part"
    allowed = min(limits.max_file_bytes, budget[0])
    written = 0
    fh = open(source, "rb") if isinstance(source, Path) else source
    try:
        with open(tmp, "xb") as out:
            while True:
                block = fh.read(1 << 20)
                if not block:
                    break
                written += len(block)
                if written > allowed:
                    if written > limits.max_file_bytes:
                        raise UploadTooLarge(f"{safe_name} is over the {_mb(limits.max_file_bytes)} upload limit; "
                                             "split it or raise --max-upload-mb")
                    raise UploadTooLarge(f"the upload is over {_mb(limits.max_total_bytes)} in all; "
                                         "upload fewer files at a time")
                out.write(block)
        if written == 0:
            raise InvalidInput(f"{safe_name} is empty; choose a file with some text")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        if isinstance(source, Path):
            fh.close()
    budget[0] -= written
    return tmp


def save_uploads(items: list[tuple[str, BinaryIO | Path]], folder: Path, limits: UploadLimits) -> list[Path]:
    """Copy each (safe name, file object or path) into `folder`, all or nothing.

    Every file is written to a temporary file first; only when all of them are within the limits
    are they renamed into place, so a rejected upload leaves no file behind (and replaces none).
    """
    folder.mkdir(parents=True, exist_ok=True)
    targets = [_target(folder, name) for name, _ in items]
    budget = [limits.max_total_bytes]
    parts: list[Path] = []
    try:
        for name, source in items:
            parts.append(_write_part(source, folder, name, limits, budget))
    except BaseException:
        for part in parts:
            part.unlink(missing_ok=True)
        raise
    for part, target in zip(parts, targets):
        os.replace(part, target)
    return targets


def save_upload(source: BinaryIO | Path, folder: Path, safe_name: str, limits: UploadLimits) -> Path:
    """One file: see save_uploads."""
    return save_uploads([(safe_name, source)], folder, limits)[0]


def remove_upload(folder: Path, source: str) -> bool:
    """Delete the saved copy of an upload (by its stored source name); False when there is none."""
    try:
        target = _target(folder, source)
    except InvalidInput:
        return False
    if target.is_file():
        target.unlink()
        return True
    return False


def clear_partial(folder: Path) -> None:
    """Remove temporary files a crash left behind in an upload folder."""
    if folder.is_dir():
        for part in folder.glob(".upload-*.part"):
            part.unlink(missing_ok=True)

