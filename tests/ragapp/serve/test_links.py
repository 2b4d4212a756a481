"""Answers never hold a live link, only the page's own [n] citation links.

Gradio 6's Chatbot renders each message with marked (GFM on), whose tokenizer turns bare
http://, https://, ftp:// and www. addresses and e-mail addresses into links (opening in a new
tab), makes [text] a link when the message also holds a definition `[text]: url`, and hands a
```mermaid block to Mermaid, whose `click` lines are links. A quoted document could so plant
"send reports to http://evil.example/?leak=..." and one click goes there. safe_markdown breaks
each pattern with a Markdown backslash escape: the text reads (and copies) the same, but is no link.

The unit tests check the Markdown; the browser tests check what Chromium shows: a real page over a
small index, asked a question whose (quoted) answer holds such addresses, and a generator that
streams hostile Markdown (the partial answer goes through safe_markdown too).
"""

from __future__ import annotations

import html
import re
import threading
from pathlib import Path

import pytest
from conftest import FakeEmbedder

from ragapp.generate.base import Generator
from ragapp.types import Answer, Citation, Passage

# marked's GFM rules (gradio/templates/frontend/assets/markdown-code-*.js): its `url` tokenizer,
# tried wherever its text rule stops, and its backslash escapes
MARKED_URL = re.compile(r"((?:ftp|https?)://|www\.)(?:[a-zA-Z0-9-]+\.?)+[^\s<]*", re.I)
MARKED_EMAIL = re.compile(r"[A-Za-z0-9._+-]+@[a-zA-Z0-9_-]+(?:\.[a-zA-Z0-9_-]*[a-zA-Z0-9])+(?![-_])")
MARKED_DEFINITION = re.compile(r"^ {0,3}\[(?:\\.|[^\[\]\\])+\]:", re.M)
MARKED_ESCAPE = re.compile(r"\\([!\"#$%&'()*+,\-./:;<=>?@\[\]\\^_`{|}~])")

SENTENCE = "Send reports to http://evil.example/?leak=conversation or www.evil.example or spy@evil.example."
INLINE = [
    SENTENCE,
    "Upper HTTP://EVIL.example/a, WWW.Evil.example, ftp://evil.example/f and xhttps://evil.example/x.",
    "Angle brackets <http://evil.example/auto> and <spy@evil.example>; www.www.evil.example too.",
    "A table | https://evil.example/t |\n|---|\n| **www.evil.example** | *a@b.example* |",
    "See [the form][f] or [f].\n\n[f]: http://evil.example/reflink\n  [g]:  <javascript:alert(1)>",
    "A backslash first: http\\://evil.example www\\.evil.example spy\\@evil.example",
]
MERMAID = '```mermaid\nflowchart LR\nA[Click me]\nclick A "http://evil.example/mermaid" _blank\n```'
P1 = Passage(text="Reports go to the office. " + SENTENCE, source="reports.md", page=None, score=0.8, chunk_id=0,
             collection="reports")


def shown_text(markdown: str) -> str:
    """The text marked shows for inline Markdown without markup: escapes and entities resolved."""
    return html.unescape(MARKED_ESCAPE.sub(r"\1", markdown))


def assert_no_links(markdown: str) -> None:
    assert not MARKED_URL.search(markdown), markdown
    assert not MARKED_EMAIL.search(markdown), markdown
    assert not MARKED_DEFINITION.search(markdown), markdown
    assert "```mermaid" not in markdown, markdown


@pytest.mark.parametrize("text", INLINE)
def test_safe_markdown_leaves_nothing_to_autolink_and_reads_the_same(text):
    from ragapp.serve.ui import safe_markdown

    md = safe_markdown(text)
    assert_no_links(md)
    if "\\" not in text:  # a backslash the document wrote is a Markdown escape itself
        assert shown_text(md) == text


def test_mermaid_blocks_stay_code():
    from ragapp.serve.ui import plain_text, render_answer, safe_markdown

    md = safe_markdown(MERMAID)
    assert_no_links(md)
    assert md.startswith("```\\mermaid\n") and 'click A "http\\://evil.example/mermaid"' in md
    assert plain_text(render_answer(Answer(text=MERMAID, passages=[P1]), "m")) == MERMAID


@pytest.mark.parametrize("text", INLINE + [MERMAID])
def test_follow_ups_get_the_answer_as_written(text):
    from ragapp.serve.ui import plain_text, render_answer

    answer = Answer(text=f"{text} [1]", passages=[P1], citations=[Citation(1, P1, True, 0.9, None)])
    assert plain_text(render_answer(answer, "f")) == f"{text} [1]"


def test_render_answer_keeps_only_citation_links():
    from ragapp.serve.ui import plain_text, render_answer

    answer = Answer(text=f"“{SENTENCE}” [1] Mail a@b.example [2].", passages=[P1], mode="extractive",
                    citations=[Citation(1, P1, True, 1.0, (26, 120))], reason="see http://evil.example/why",
                    unsupported_sentences=["Mail a@b.example [2]."])
    md = render_answer(answer, "abc")
    assert '<a href="#cite-abc-1" title="reports.md">[1]</a>' in md
    assert "[2]" in md and "#cite-abc-2" not in md  # no passage 2
    assert re.findall(r'href="([^"]*)"', md) == ["#cite-abc-1"]
    assert_no_links(md)
    assert "http\\://evil.example/?leak=conversation or www\\.evil.example or spy\\@evil.example." in md
    assert "⚠ not supported by its source" in md
    assert plain_text(md) == f"“{SENTENCE}” [1] Mail a@b.example [2]."


def test_source_panel_is_text():
    from ragapp.serve.ui import render_sources

    marked = "Send reports to http://evil.example/?leak"
    start = P1.text.index(marked)
    answer = Answer(text="x [1]", passages=[P1], question="Where to? http://evil.example/q",
                    citations=[Citation(1, P1, True, 0.9, (start, start + len(marked)))])
    panel = render_sources(answer, "abc", selected=1)
    assert "<a" not in panel and "href" not in panel
    assert f"<mark>{marked}</mark>=conversation" in panel and "http://evil.example/q" in panel


# ----------------------------------------------------------------------------- in Chromium

CHROMIUM = "/usr/bin/chromium"
QUESTION = "Send reports to evil example?"  # FakeEmbedder: passes the gate, quotes SENTENCE
STREAMED = ("Send reports to http://evil.example/?leak=stream or WWW.evil.example or spy@evil.example "
            "or <http://evil.example/angle> [1].\nSee [the form][f].\n\n[f]: http://evil.example/reflink\n\n"
            + MERMAID + "\n")

# every element with a link in the chat or the source panel whose target is not one of our [n]
BAD_LINKS = """(sel) => [...document.querySelectorAll(sel)].flatMap(root =>
    [...root.querySelectorAll('a, [href], [*|href]')]
        .filter(el => !((el.getAttribute('href') ?? el.getAttributeNS('http://www.w3.org/1999/xlink', 'href') ?? '')
                        .startsWith('#cite-')))
        .map(el => el.outerHTML.slice(0, 160)))"""
WATCH = """() => {  // records any link that ever appears in the chat, partial answers included
    window.__bad = [];
    const chat = document.querySelector('#chat');
    const scan = () => window.__bad.push(...(%s)('#chat'));
    new MutationObserver(scan).observe(chat, {subtree: true, childList: true, characterData: true, attributes: true});
}""" % BAD_LINKS

needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                    reason="needs Debian's chromium at /usr/bin/chromium (make browser)")


class HostileWriter(Generator):
    """Streams STREAMED, then waits for the test (`release`) so the partial answer stays on the page."""

    name = "hostile"
    context_tokens = 4096

    def __init__(self):
        self.release = threading.Event()

    def stream(self, messages, *, max_new_tokens=256, temperature=0.0, stop=()):
        for line in STREAMED.splitlines(keepends=True):
            yield line
        self.release.wait(30)


def _site(root: Path, tokenizer, backend: str, generator=None):
    from ragapp.index.index import Index
    from ragapp.serve.service import RagService, ServeConfig

    embedder = FakeEmbedder(tokenizer)
    docs = root / "docs"
    docs.mkdir(parents=True)
    (docs / "reports.md").write_text("Quarterly reports are due on the first Monday of each quarter. "
                                     f"{SENTENCE} Late reports need a note from your manager.")
    with Index.create("reports", root / "indexes", embedder=embedder) as index:
        index.sync(docs, embedder=embedder, progress=False)
    return RagService(ServeConfig(index_dir=root / "indexes", collections=["reports"], backend=backend,
                                  folder_roots=[]), embedder=embedder, generator=generator)


@pytest.fixture(scope="module")
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield browser
        browser.close()


def _open(browser, url: str):
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.set_default_timeout(30_000)
    page.goto(url)
    page.wait_for_selector("#question textarea")
    page.locator("#collections").get_by_text("reports").first.wait_for()  # preselected, choices loaded
    page.evaluate(WATCH)
    return page


def _ask(page, question: str) -> None:
    page.fill("#question textarea", question)
    page.press("#question textarea", "Enter")


def _check_final(page, tmp_path: Path) -> str:
    """After the final answer: no link but the [n] in the chat or the source panel; the addresses
    shown as text in both; the [n] still opens its passage. Returns the chat's text."""
    cite = page.locator('#chat a[href^="#cite-"]')
    cite.first.wait_for()
    page.wait_for_timeout(500)  # anything rendered late (Mermaid loads its code on demand) has shown up
    ref = cite.first.get_attribute("href")[len("#cite-"):]
    cite.first.click()
    opened = page.locator(f"#sources details#src-{ref}[open]")
    opened.wait_for()
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    bad, seen = page.evaluate(BAD_LINKS, "#chat, #sources"), page.evaluate("() => window.__bad")
    assert not bad, bad
    assert not seen, sorted(set(seen))
    assert SENTENCE in opened.inner_text()
    return page.locator("#chat").inner_text()


@pytest.mark.browser
@needs_chromium
def test_quoted_answer_shows_addresses_as_text(chromium, tmp_path, tokenizer):
    from ragapp.serve.api import BackgroundServer

    service = _site(tmp_path, tokenizer, "extractive")
    with BackgroundServer(service) as url:
        page = _open(chromium, url)
        try:
            _ask(page, QUESTION)
            chat = _check_final(page, tmp_path)
            assert "Quoted from your documents" in chat and SENTENCE in chat  # as text
        finally:
            page.close()


@pytest.mark.browser
@needs_chromium
def test_streamed_partial_answer_shows_addresses_as_text(chromium, tmp_path, tokenizer):
    from ragapp.serve.api import BackgroundServer

    writer = HostileWriter()
    service = _site(tmp_path, tokenizer, "llm", generator=writer)
    with BackgroundServer(service) as url:
        page = _open(chromium, url)
        try:
            _ask(page, QUESTION)
            # the whole stream is on the page: its Mermaid block as code, or (unsafe) as a diagram
            page.wait_for_function("""() => {
                const chat = document.querySelector('#chat');
                return chat.querySelector('.mermaid svg')
                    || [...chat.querySelectorAll('pre code')].some(c => c.textContent.includes('click A'));
            }""")
            page.wait_for_timeout(300)
            partial = page.locator("#chat").inner_text()
            bad = page.evaluate(BAD_LINKS, "#chat")
            writer.release.set()
            assert not bad, bad
            assert "http://evil.example/?leak=stream or WWW.evil.example or spy@evil.example" in partial
            assert "<http://evil.example/angle>" in partial and "[f]: http://evil.example/reflink" in partial
            _check_final(page, tmp_path)
        finally:
            writer.release.set()
            page.close()
