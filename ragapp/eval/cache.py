"""Per-question answers kept on disk, so that an interrupted evaluation resumes: the JSONL reader, and the
fingerprint of a generator's weights that names the file its answers go to (a remade model never resumes
from the old one's answers)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ragapp.config import DEFAULT_LLM_MODEL


def read_results(path: Path) -> dict[str, dict]:
    """Rows of a results JSONL by id, ready to append to: a last line torn by an interruption is
    ended (so the next row starts on its own line) and skipped (so it is recomputed)."""
    rows = {}
    if path.exists():
        text = path.read_text()
        if text and not text.endswith("\n"):
            with open(path, "a", encoding="utf-8") as fh:
                fh.write("\n")
        for line in text.splitlines():
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # a line cut by an interruption: recompute it
                    continue
                rows[row["id"]] = row
    return rows


def model_fingerprint(backend: str | None, model: str | None, max_new_tokens: int) -> str:
    """Short hash of what decides a generator's answers: the local model folder's weights and training card
    (a hub id or an endpoint's model name stands for itself) and the answer length."""
    h = hashlib.sha256(f"{backend or 'llm'}|{model}|{max_new_tokens}".encode())
    folder = Path(model) if model else (DEFAULT_LLM_MODEL if (backend or "llm") == "llm" else None)
    if folder is not None and folder.is_dir():
        # adapters shipped in stage subfolders (ragapp.generate.assemble) count as weights too
        files = [folder / "training.json", folder / "config.json", *sorted(folder.rglob("*.safetensors"))]
        for f in files:
            if f.is_file():
                with open(f, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 22), b""):
                        h.update(block)
    return h.hexdigest()[:10]
