"""`ragapp` command: instant --help, exit codes (0 ok, 1 user error, 2 bad usage, 130 Ctrl-C), messages."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time

import pytest
from conftest import ROOT, sentences, write_files

from ragapp import cli
from ragapp.index.index import Index, list_indexes

HEAVY = ("torch", "faiss", "transformers", "sentence_transformers", "gradio")


def ragapp(*args, stdin: str = "", env_extra: dict | None = None, timeout: float = 120):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "ragapp.cli", *map(str, args)], input=stdin, capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=timeout)


def run_main(capsys, *args, stdin: str = ""):
    """In-process: (exit code, stdout, stderr)."""
    old = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        code = cli.main([str(a) for a in args])
    finally:
        sys.stdin = old
    out, err = capsys.readouterr()
    return code, out, err


def test_help_is_instant_and_imports_nothing_heavy():
    start = time.monotonic()
    result = ragapp("--help")
    elapsed = time.monotonic() - start
    assert result.returncode == 0
    for command in ("index", "search", "info", "remove"):
        assert command in result.stdout
    assert elapsed < 1.5, f"ragapp --help took {elapsed:.2f} s"
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, ragapp.cli; print(' '.join(m for m in %r if m in sys.modules))" % (HEAVY,)],
        capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert probe.returncode == 0 and probe.stdout.strip() == ""


@pytest.mark.parametrize("command", ["index", "search", "info", "remove"])
def test_subcommand_help(capsys, command):
    with pytest.raises(SystemExit) as exit_:
        cli.main([command, "--help"])
    assert exit_.value.code == 0
    assert "--index-dir" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    ([], "required: COMMAND"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["search"], "required: query"),
    (["index", "docs", "--vector", "annoy"], "invalid choice: 'annoy'"),
    (["search", "q", "--k", "many"], "invalid int value: 'many'"),
    (["info", "--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_usage_exits_2(capsys, args, message):
    with pytest.raises(SystemExit) as exit_:
        cli.main(args)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_user_errors_exit_1_with_the_message(capsys, tmp_path, index_dir):
    missing = tmp_path / "nowhere"
    cases = [
        (["index", missing, "--index-dir", index_dir], f"error: {missing}: folder not found\n"),
        (["index", tmp_path / "f.txt", "--index-dir", index_dir], None),
        (["search", "hello", "--index", "nope", "--index-dir", index_dir],
         f"error: no index 'nope' in {index_dir}; create it with: ragapp index FOLDER --name nope\n"),
        (["search", "  ", "--index-dir", index_dir], "error: empty query; pass the words to look for"),
        (["search", "q", "--k", "0", "--index-dir", index_dir], "error: --k 0: must be at least 1\n"),
        (["search", "q", "--index-dir", index_dir], f"error: no index in {index_dir}; create one with"),
        (["info", "nope", "--index-dir", index_dir], "error: no index 'nope'"),
        (["remove", "nope", "--yes", "--index-dir", index_dir], "error: no index 'nope'"),
        (["index", tmp_path, "--name", "bad name", "--index-dir", index_dir], "error: invalid index name 'bad name'"),
        (["index", tmp_path, "--workers", "-1", "--index-dir", index_dir], "error: --workers -1: must be 0 or more"),
        (["index", tmp_path, "--file-timeout", "0", "--index-dir", index_dir],
         "error: --file-timeout 0: must be more than 0 seconds\n"),
        (["index", tmp_path, "--file-memory-mb", "64", "--index-dir", index_dir],
         "error: --file-memory-mb 64: must be at least 256"),
    ]
    (tmp_path / "f.txt").write_text("x")
    for args, message in cases:
        code, out, err = run_main(capsys, *args)
        assert code == 1, args
        if message is None:
            assert "not a folder; pass the folder that holds your documents" in err
        elif message.endswith("\n"):
            assert err.endswith(message), (args, err)
        else:
            assert message in err, (args, err)
    assert list_indexes(index_dir) == []  # no error left an empty index behind


@pytest.fixture
def built(tmp_path, make_index, fake_embedder):
    folder = write_files(tmp_path / "docs", {"a.txt": sentences(1), "b.md": sentences(2), "sub/c.txt": sentences(3)})
    index = make_index("docs")
    index.sync(folder, embedder=fake_embedder, progress=False)
    index.close()
    return folder


def test_index_again_is_incremental_and_needs_no_model(capsys, built, index_dir):
    code, out, err = run_main(capsys, "index", built, "--name", "docs", "--index-dir", index_dir, "--no-progress")
    assert code == 0, err
    assert "added 0, updated 0, removed 0, renamed 0, unchanged 3, skipped 0 unsupported, failed 0" in out
    assert "index 'docs': 3 files" in out


@pytest.mark.parametrize("flags, message", [
    (["--chunk-tokens", "100"], "index 'docs' was built with --chunk-tokens 200; pass --rebuild to change it to 100"),
    (["--vector", "hnsw"], "index 'docs' was built with --vector flat; pass --rebuild to change it to hnsw"),
    (["--embedder", "all-MiniLM-L6-v2"],
     "index 'docs' was built with fake-hash-32 (32-d); rebuild it with --rebuild or pass --embedder fake-hash-32"),
])
def test_index_flags_that_disagree_with_the_index(capsys, built, index_dir, flags, message):
    code, _, err = run_main(capsys, "index", built, "--name", "docs", "--index-dir", index_dir, *flags)
    assert code == 1
    assert err == f"indexing {built} into 'docs' ({index_dir / 'docs'})\nerror: {message}\n"


def test_info_table_detail_and_json(capsys, built, index_dir):
    code, out, _ = run_main(capsys, "info", "--index-dir", index_dir)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "FILES", "CHUNKS", "EMBEDDER", "VECTORS", "SIZE"]
    assert lines[1].split()[:5] == ["docs", "3", lines[1].split()[2], "fake-hash-32", "flat"]
    code, out, _ = run_main(capsys, "info", "docs", "--files", "--index-dir", index_dir)
    assert code == 0
    assert "embedder   fake-hash-32 (32-d)" in out and "chunking   200 tokens, overlap 30" in out
    assert "sub/c.txt" in out and "vectors    flat," in out
    code, out, _ = run_main(capsys, "info", "docs", "--json", "--index-dir", index_dir)
    data = json.loads(out)
    assert data["files"] == 3 and data["dim"] == 32 and data["bytes"] > 0


def test_remove_asks_unless_yes(capsys, built, index_dir):
    code, _, err = run_main(capsys, "remove", "docs", "--index-dir", index_dir, stdin="n\n")
    assert code == 1 and "cancelled; nothing removed" in err and list_indexes(index_dir) == ["docs"]
    code, _, err = run_main(capsys, "remove", "docs", "--index-dir", index_dir, stdin="")  # no terminal: no
    assert code == 1 and list_indexes(index_dir) == ["docs"]

    code, _, err = run_main(capsys, "remove", "docs", "--file", "missing.txt", "--yes", "--index-dir", index_dir)
    assert code == 1 and "no file 'missing.txt' in index 'docs'" in err
    code, out, _ = run_main(capsys, "remove", "docs", "--file", "sub/c.txt", "--index-dir", index_dir, stdin="y\n")
    assert code == 0 and "removed 1 file(s) from index 'docs'" in out
    with Index.open("docs", index_dir) as index:
        assert [f["source"] for f in index.files()] == ["a.txt", "b.md"]

    code, out, _ = run_main(capsys, "remove", "docs", "--yes", "--index-dir", index_dir)
    assert code == 0 and out.startswith("removed index 'docs' (2 files,")
    assert list_indexes(index_dir) == []


def test_ctrl_c_exits_130_and_says_how_to_resume(capsys, built, index_dir, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Index, "sync", interrupted)
    code, _, err = run_main(capsys, "index", built, "--name", "docs", "--index-dir", index_dir)
    assert code == 130
    assert "interrupted: everything committed so far is kept; run the same command again to finish" in err


@pytest.mark.slow
def test_real_index_and_search_end_to_end(capsys, tmp_path):
    """The real thing: bundled MiniLM, real files, then a search (in-process, so the model loads
    once for the whole test session; the subprocess path is covered by the --help test)."""
    folder = write_files(tmp_path / "docs", {
        "faiss.md": "# Vector search\n\nFAISS finds the nearest vectors to a query embedding.",
        "cooking.txt": "To bake bread, mix flour, water, salt and yeast, then let the dough rise.",
        "same.txt": "To bake bread, mix flour, water, salt and yeast, then let the dough rise.",
        "broken.pdf": b"%PDF-1.4 not really",
    })
    index_dir = tmp_path / "ix"
    code, out, err = run_main(capsys, "index", folder, "--name", "docs", "--index-dir", index_dir, "--no-progress")
    assert code == 0, err
    assert "added 3," in out and "failed 1;" in out
    assert "broken.pdf: corrupt PDF" in err
    code, out, err = run_main(capsys, "search", "how do I make bread dough", "--index", "docs", "--index-dir",
                              index_dir, "--k", "2", "--json")
    assert code == 0, err
    hits = json.loads(out)
    assert hits[0]["source"] in ("cooking.txt", "same.txt")
    assert sorted(hits[0]["sources"]) == ["cooking.txt", "same.txt"]
    code, out, err = run_main(capsys, "search", "nearest vectors", "--index-dir", index_dir, "--k", "1")
    assert code == 0, err
    assert out.startswith("1. ") and "faiss.md" in out.splitlines()[0]
