"""End to end in a real browser: headless Chromium (Debian's /usr/bin/chromium) driven by Playwright.

Open the page, upload a document, ask, watch the answer appear with a citation, click the [n] and
see the passage, highlighted, in the source panel. Real parts: the MiniLM embedder, the shipped
default model (models/ragchat) streaming its answer, the citation check. The README's picture is
taken the same way over the sample corpus.

The screenshot goes to tmp_path; to remake the README's picture over the sample corpus:

    python tests/ragapp/serve/test_browser.py docs/screenshot.png
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
DOC = """# Greenhouse notes

The greenhouse was built in 2019 on the south side of the garden, where it gets sun from morning to
evening. Its frame is aluminium and its panes are twin-wall polycarbonate, which keeps the heat in
better than single glass.

The greenhouse heater switches on when the temperature falls below 12 degrees Celsius. It is an
electric fan heater of 2 kilowatts, controlled by a thermostat on the middle shelf.
Tomato seedlings are watered every morning at seven with rain water from the blue tank.
The vents open automatically above 28 degrees, driven by wax cylinders that expand in the heat.
"""

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium at /usr/bin/chromium (make browser)"),
]


def make_service(index_dir: Path, backend: str = "extractive"):
    """A server on the real embedder and the given generator backend."""
    from ragapp.serve.service import RagService, ServeConfig

    service = RagService(ServeConfig(index_dir=index_dir, backend=backend))
    service.check_generator()  # loads it now, not during the first question
    return service


def open_page(playwright, url: str):
    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.console = []  # kept for the failure report
    page.on("console", lambda m: page.console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: page.console.append(f"pageerror: {e}"))
    page.set_default_timeout(60_000)
    page.goto(url)
    page.wait_for_selector("#question textarea")
    return browser, page


def upload(page, path: Path, collection: str) -> str:
    page.locator("#uploads input[type=file]").set_input_files(str(path))
    page.get_by_text(path.name).first.wait_for(timeout=120_000)  # the file is on the server before we index it
    target = page.locator("#target input")
    target.fill(collection)
    target.press("Enter")
    status = page.locator("#status")
    done = status.get_by_text(f"✓ {collection}:")
    # the page's own refusals (an error toast): a click that races the upload box or the typed name
    refused = page.get_by_text("no file chosen").or_(page.get_by_text("no collection named"))
    for _attempt in range(2):
        page.click("#add-btn")
        done.or_(refused).first.wait_for(timeout=120_000)
        if done.is_visible():
            break
        print(f"add refused ({refused.first.inner_text()!r}); clicking again")
        page.wait_for_timeout(1_000)
    done.wait_for(timeout=120_000)
    return status.inner_text()


def ask(page, question: str) -> list[str]:
    """Types the question; returns the successive texts of the chat until the answer has a citation link."""
    page.evaluate("""() => {
        window.__answers = [];
        const chat = document.querySelector('#chat');
        new MutationObserver(() => {
            const t = chat.innerText;
            if (window.__answers.at(-1) !== t) window.__answers.push(t);
        }).observe(chat, {subtree: true, childList: true, characterData: true});
    }""")
    page.fill("#question textarea", question)
    page.press("#question textarea", "Enter")
    page.locator('#chat a[href^="#cite-"]').first.wait_for(timeout=180_000)
    return page.evaluate("() => window.__answers")


def open_citation(page, first: bool = False):
    links = page.locator('#chat a[href^="#cite-"]')
    link = links.first if first else links.last
    number = link.inner_text().strip("[]")
    ref = link.get_attribute("href")[len("#cite-"):]
    link.click()
    opened = page.locator(f"#sources details#src-{ref}[open]")
    opened.wait_for()
    return number, opened


def test_upload_ask_and_open_the_citation(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    from ragapp.serve.api import BackgroundServer

    doc = tmp_path / "greenhouse.md"
    doc.write_text(DOC)
    service = make_service(tmp_path / "indexes", backend="llm")
    with BackgroundServer(service) as url, sync_playwright() as pw:
        browser, page = open_page(pw, url)
        try:
            status = upload(page, doc, "garden")
            assert "added 1" in status and "1 files" in status
            # the selector now offers the new collection and has chosen it
            # (Gradio updates the selector a moment after the status; expect() waits up to 10 s for it)
            expect(page.locator("#collections")).to_contain_text("garden", timeout=10_000)

            states = ask(page, "At what temperature do the vents open?")
            final = states[-1]
            assert "28 degrees" in final and "[1]" in final
            if service.default_backend != "extractive":
                assert len(states) >= 3, states  # the model's answer was seen growing

            number, opened = open_citation(page)
            assert opened.locator("summary").inner_text().startswith(f"[{number}] greenhouse.md")
            marked = opened.locator("mark").inner_text()
            assert "28 degrees" in marked or "vents" in marked
            assert "greenhouse heater" in opened.inner_text()  # the whole passage, beyond the highlight
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            print(f"screenshot: {tmp_path / 'failure.png'}\nbrowser console:\n" + "\n".join(page.console[-30:]))
            raise
        finally:
            browser.close()
    assert (tmp_path / "page.png").stat().st_size > 20_000


ORCHARD = """# Orchard notes

The orchard has 14 apple trees and 3 pear trees, planted in 2016 along the east fence.
The oldest tree is a Bramley apple that gives about 40 kilograms of fruit in a good year.
The trees are pruned every February, and the cuttings go to the compost heap by the shed.
"""


def test_evaluate_tab_makes_a_set_runs_it_and_shows_the_report(tmp_path):
    """The Evaluate tab: pick the collection, make a question set from it, run it with the current settings
    (extractive here: no model to wait for), watch it finish, see the table and the charts, get the files."""
    from playwright.sync_api import expect, sync_playwright

    from ragapp.serve.api import BackgroundServer

    (tmp_path / "greenhouse.md").write_text(DOC)
    (tmp_path / "orchard.md").write_text(ORCHARD)
    service = make_service(tmp_path / "indexes", backend="extractive")
    with BackgroundServer(service) as url, sync_playwright() as pw:
        browser, page = open_page(pw, url)
        try:
            page.locator("#uploads input[type=file]").set_input_files([str(tmp_path / "greenhouse.md"),
                                                                      str(tmp_path / "orchard.md")])
            # both on the server: each row gets its download link (with two files the names show shortened, "o… .md")
            expect(page.locator('#uploads a[download$=".md"]')).to_have_count(2, timeout=120_000)
            page.locator("#target input").fill("garden")
            page.locator("#target input").press("Enter")
            page.click("#add-btn")
            page.locator("#status").get_by_text("added 2").wait_for(timeout=120_000)
            page.get_by_role("tab", name="Evaluate").click()
            # opening the tab fills the choices with the collections made since, and picks the first
            expect(page.locator("#eval-collection input")).to_have_value("garden", timeout=10_000)
            page.click("#eval-btn")
            done = page.locator("#eval-status").get_by_text("✓ garden:")
            done.or_(page.get_by_text("The evaluation failed")).or_(page.get_by_text("Cannot do that")).first.wait_for(
                timeout=300_000)
            assert done.is_visible(), page.locator("body").inner_text()[-2000:]
            table = page.locator("#eval-table")
            expect(table).to_contain_text("extractive · k=5 · gate on")
            expect(table).to_contain_text("hallucination")
            expect(page.locator("#eval-charts img")).to_have_count(2)
            assert page.locator("#eval-charts img").first.evaluate("img => img.naturalWidth") > 400  # the PNG loaded
            expect(page.locator('#eval-files a[download="questions.jsonl"]')).to_be_visible()
            page.screenshot(path=str(tmp_path / "evaluate.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            print(f"screenshot: {tmp_path / 'failure.png'}\nbrowser console:\n" + "\n".join(page.console[-30:]))
            raise
        finally:
            browser.close()


def screenshot(out: Path, question: str = "Which torch version does the first run install?") -> None:
    """The README's picture: the sample corpus, one question, its first citation opened."""
    from playwright.sync_api import sync_playwright

    from ragapp.serve.api import BackgroundServer

    root = Path(__file__).resolve().parents[3]
    with tempfile.TemporaryDirectory() as tmp:
        service = make_service(Path(tmp) / "indexes", backend="llm")
        service.config.collections = ["sample"]
        service.wait(service.index_folder(None, "sample", root / "corpora" / "sample", trusted=True))
        with BackgroundServer(service) as url, sync_playwright() as pw:
            browser, page = open_page(pw, url)
            ask(page, question)
            open_citation(page, first=True)
            page.evaluate("""() => {  // show the question too: scroll the chat back to its top
                for (const el of document.querySelectorAll('#chat *'))
                    if (el.scrollHeight > el.clientHeight + 4 && getComputedStyle(el).overflowY !== 'visible') el.scrollTop = 0;
            }""")
            time.sleep(0.5)
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out))
            browser.close()
    print(f"wrote {out} ({service.default_backend} answers)")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    screenshot(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshot.png"))
