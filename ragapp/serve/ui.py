"""The Gradio page: chat over your collections, with sources you can open, and document management; a
second tab, "Evaluate", measures how often the current settings make things up (ragapp.eval).

Layout: collections and settings on the left; the chat (gr.ChatInterface, streaming Markdown) in
the middle; the source panel on the right. Answers show inline [n] links; clicking one opens
that passage in the source panel (file, page, score, the supporting span highlighted). The links
carry an answer id: the server keeps recent answers (RagService.remember), so the panel can show
the sources of any earlier answer too.

`PageHandlers.respond(message, history, ...)` is the chat function: a generator yielding the
answer so far (Markdown), then the checked answer with its citations. Errors become gr.Error
messages that say what to do (the RagError text).

    python -m ragapp.serve.ui          # the page alone, over $RAGAPP_INDEX_DIR (ragapp serve adds the API)
"""

from __future__ import annotations

import html
import re
import time
from pathlib import Path

import gradio as gr

from ragapp.config import SUPPORTED_EXTENSIONS
from ragapp.errors import RagError
from ragapp.serve.service import BACKENDS, RagService, ServeConfig
from ragapp.types import Answer

CITE_JS = """
if (window.__ragappCite) document.removeEventListener('click', window.__ragappCite, true);
window.__ragappCite = (event) => {
  const link = event.target.closest ? event.target.closest('a[href^="#cite-"]') : null;
  if (!link) return;
  event.preventDefault();
  event.stopPropagation();
  trigger('cite', {ref: link.getAttribute('href').slice(6)});
};
document.addEventListener('click', window.__ragappCite, true);
watch('value', () => {
  // bring the highlighted span of the opened passage into view inside its scrolling box
  const mark = element.querySelector('details[open] mark');
  const box = mark && mark.closest('.rag-passage');
  if (box) box.scrollTop = Math.max(0, mark.offsetTop - box.offsetTop - 24);
});
"""

CSS = """
.rag-src { border: 1px solid var(--border-color-primary); border-radius: 8px; margin: 6px 0; padding: 4px 10px; }
.rag-src.selected { border-color: var(--color-accent); box-shadow: 0 0 0 2px var(--color-accent-soft); }
.rag-src summary { cursor: pointer; font-weight: 600; }
.rag-src .meta { color: var(--body-text-color-subdued); font-size: 0.85em; margin: 4px 0; }
.rag-passage { white-space: pre-wrap; overflow-wrap: anywhere; line-height: 1.45; max-height: 22em; overflow-y: auto; }
.rag-passage mark { background: #fde68a; color: inherit; padding: 0 1px; }
.rag-bad { color: #b45309; }
.rag-none { color: var(--body-text-color-subdued); }
a[href^="#cite-"] { text-decoration: none; font-weight: 600; }
.rag-chart { margin: 8px 0; } .rag-chart img { max-width: 100%; } .rag-chart figcaption { font-size: 0.85em; }
"""

HEAD = '<meta name="description" content="ragapp: chat with your documents, with verified citations">'

PANEL_EMPTY = '<div class="rag-none">Sources appear here. Click a [n] in an answer to open its passage.</div>'
_CITE = re.compile(r"\[(\d{1,3})\]")


# ----------------------------------------------------------------------------- rendering


def _label(p) -> str:
    return f"{p.source} p. {p.page}" if p.page else p.source


_LINE_MARKUP = re.compile(r"^(\s{0,3})(#|=+\s*$|-{3,}\s*$|>)", re.M)
# Where the chatbot's Markdown (marked, GFM) would make a link of plain text: http://, https://,
# ftp:// and www. addresses (any case) and e-mail addresses, reference definitions `[x]: url`.
# A backslash escape at each of these places breaks the pattern; marked shows the same text.
_AUTOLINK = re.compile(r"(?=://)|(?<=www)(?=\\?\.)|(?=@)|(?<=\])(?=\\?:)", re.I)
_AUTOLINK_ESCAPE = re.compile(r"\\(?=://)|(?<=www)\\(?=\\?\.)|\\(?=@)|(?<=\])\\(?=\\?:)", re.I)  # plain_text's inverse


def safe_markdown(text: str) -> str:
    """Model or document text made safe to render: no HTML, and no Markdown that fetches or links
    anything (a quoted document could hold ![](http://attacker/?data) to leak a conversation).
    Bare URLs and e-mail addresses stay text (a backslash escape keeps marked from linking them);
    a Mermaid block stays code (its `click` lines would be links). Headings, rules and block
    quotes of quoted documents are shown as plain text. (Inside `code` the escapes show.)"""
    text = html.escape(text, quote=False)
    text = text.replace("![", "!\\[").replace("](", "]\\(").replace("```mermaid", "```\\mermaid")
    text = _AUTOLINK.sub(r"\\", text)
    return _LINE_MARKUP.sub(lambda m: m.group(1) + "\\" + m.group(2), text)


def render_answer(answer: Answer, answer_id: str) -> str:
    """The final answer as Markdown: [n] become links to the source panel; abstentions and
    unsupported sentences are marked."""
    n_passages = len(answer.passages)
    text = safe_markdown(answer.text)
    for sentence in answer.unsupported_sentences:
        s = safe_markdown(sentence)
        if s and s in text:
            text = text.replace(s, f"{s} <sup>⚠ not supported by its source</sup>", 1)

    def link(m: re.Match) -> str:
        n = int(m.group(1))
        if not 1 <= n <= n_passages:
            return m.group(0)
        title = html.escape(_label(answer.passages[n - 1]))
        return f'<a href="#cite-{answer_id}-{n}" title="{title}">[{n}]</a>'

    text = _CITE.sub(link, text)
    reason = _AUTOLINK.sub(r"\\", html.escape(answer.reason or ""))
    if answer.abstained:
        why = f"\n\n<small>Why: {reason}</small>" if answer.reason else ""
        return f"⊘ **Not in your documents.** {text}{why}"
    if answer.mode == "extractive":
        why = f" <small>— {reason}</small>" if answer.reason else ""
        return f"**Quoted from your documents**{why}\n\n{text}"
    if answer.unsupported_sentences:
        k = len(answer.unsupported_sentences)
        return f"{text}\n\n⚠ {k} sentence{'s' if k > 1 else ''} not supported by the cited passages."
    return text


def plain_text(markdown: str) -> str:
    """An answer as the model wrote it, without the page's decorations (for follow-up questions)."""
    text = re.sub(r" ?<sup>.*?</sup>| ?<small>.*?</small>", "", markdown, flags=re.S)
    text = re.sub(r'<a href="#cite-[^"]*"[^>]*>(\[\d+\])</a>', r"\1", text)
    text = re.sub(r"^(⊘ \*\*Not in your documents\.\*\* |\*\*Quoted from your documents\*\*\s*)", "", text.strip())
    text = "\n".join(ln for ln in text.splitlines() if not ln.startswith("⚠"))
    text = _AUTOLINK_ESCAPE.sub("", text).replace("```\\mermaid", "```mermaid")
    text = re.sub(r"\\([\[(#=>-])", r"\1", text)
    return html.unescape(text).strip()


def _highlighted(text: str, span) -> str:
    if not span:
        return html.escape(text)
    a, b = max(0, int(span[0])), min(len(text), int(span[1]))
    if a >= b:
        return html.escape(text)
    return f"{html.escape(text[:a])}<mark>{html.escape(text[a:b])}</mark>{html.escape(text[b:])}"


def render_sources(answer: Answer, answer_id: str, selected: int | None = None, rename=lambda n: n) -> str:
    """The source panel: every passage the answer was given, cited ones marked; `selected` (a [n] clicked) open."""
    if not answer.passages:
        return f'<div class="rag-none">No passage was retrieved for “{html.escape(answer.question)}”.</div>'
    cites = {c.number: c for c in answer.citations}
    parts = [f'<div class="rag-head">Sources for “{html.escape(answer.question)}”</div>']
    for n, p in enumerate(answer.passages, 1):
        c = cites.get(n)
        if c is None:
            check = '<span class="rag-none">not cited</span>'
        elif c.supported:
            check = f"✓ supports the answer ({c.support:.2f})"
        else:
            check = f'<span class="rag-bad">⚠ does not support the sentence citing it ({c.support:.2f})</span>'
        body = _highlighted(p.text, c.highlight if c else None)
        where = f" · {html.escape(rename(p.collection))}" if p.collection else ""
        parts.append(
            f'<details class="rag-src{" selected" if n == selected else ""}" id="src-{answer_id}-{n}"'
            f'{" open" if n == selected else ""}><summary>[{n}] {html.escape(_label(p))}</summary>'
            f'<div class="meta">score {p.score:.3f}{where} · {check}</div>'
            f'<div class="rag-passage">{body}</div></details>'
        )
    return "\n".join(parts)


def _history_pairs(history) -> list[tuple[str, str]]:
    """ChatInterface history (role/content dicts; content a string or a list of parts) → (user, assistant) pairs."""
    def text(content) -> str:
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return " ".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)
        return ""

    pairs, pending = [], None
    for msg in history or []:
        role, content = msg.get("role"), text(msg.get("content"))
        if role == "user":
            pending = content
        elif role == "assistant" and pending is not None and not (msg.get("metadata") or {}).get("title"):
            pairs.append((pending, plain_text(content)))
            pending = None
    return pairs


def _user(request: gr.Request | None) -> str | None:
    return getattr(request, "username", None) if request is not None else None


def _error(err: Exception) -> gr.Error:
    if isinstance(err, RagError):
        return gr.Error(str(err), title="Cannot do that")
    return gr.Error(f"{type(err).__name__}: {err}. This is a bug; the server log has the details.", title="Error")


# ----------------------------------------------------------------------------- handlers


class PageHandlers:
    def __init__(self, service: RagService):
        self.service = service
        self.uploaded: set[str] = set()  # build_demo swaps in the paths Gradio's upload route wrote

    def respond(self, message: str, history: list, collections: list[str] | None = None, k: int = 5,
                backend: str | None = None, model: str = "", temperature: float = 0.0, gate: bool = True,
                gate_threshold: float | None = None, request: gr.Request = None):
        """Yields (answer so far, source panel): partial Markdown while the model writes, then the checked answer."""
        user = _user(request)
        stream = None
        try:
            stream = self.service.chat_stream(user, message, _history_pairs(history), collections or None, k=int(k),
                                              backend=backend or None, model=model, temperature=float(temperature),
                                              gate=bool(gate), gate_threshold=gate_threshold)
            for item in stream:
                if isinstance(item, str):
                    yield safe_markdown(item), gr.skip()
                    continue
                answer_id = self.service.remember(user, item)
                rename = lambda n: self.service.display_name(user, n)  # noqa: E731
                yield render_answer(item, answer_id), render_sources(item, answer_id, rename=rename)
        except Exception as err:  # noqa: BLE001 - shown to the user
            raise _error(err) from err
        finally:
            if stream is not None:
                stream.close()  # stopped or disconnected: release the model at once

    def show_citation(self, evt: gr.EventData, request: gr.Request = None) -> str:
        try:
            ref = str(getattr(evt, "ref", ""))
            answer_id, _, n = ref.rpartition("-")
            user = _user(request)
            answer = self.service.recall(user, answer_id)
            return render_sources(answer, answer_id, int(n) if n.isdigit() else None,
                                  rename=lambda c: self.service.display_name(user, c))
        except Exception as err:  # noqa: BLE001
            raise _error(err) from err

    def refresh(self, selected: list[str] | None, target: str | None, request: gr.Request = None):
        """Collection choices for the selector and the upload target, and the target's files."""
        user = _user(request)
        names = self.service.collections(user)
        keep = [n for n in (selected or []) if n in names]
        if not keep:
            keep = [n for n in self.service.config.collections if n in names] or names[:1]
        writable = [n for n in names if self.service.writable(user, n)]
        if not target or (target in names and target not in writable):
            target = (keep[0] if keep and keep[0] in writable else (writable[0] if writable else "my-documents"))
        table, choices = self._files(user, target)
        return (gr.update(choices=names, value=keep), gr.update(choices=writable, value=target),
                table, gr.update(choices=choices, value=None))

    def refresh_adding(self, selected: list[str] | None, target: str | None, request: gr.Request = None):
        """After documents went into `target`: as refresh, with `target` also chosen for the chat."""
        names = self.service.collections(_user(request))
        chosen = [n for n in (selected or []) if n in names]
        if target in names and target not in chosen:
            chosen.append(target)
        return self.refresh(chosen, target, request)

    def _files(self, user, collection):
        if not collection or collection not in self.service.collections(user):
            return [], []
        files = self.service.files(user, collection)
        rows = [[f["source"], f["chunks"], f"{f['size'] / 1024:.1f} KB"] for f in files]
        return rows, [f["source"] for f in files]

    def show_files(self, collection: str | None, request: gr.Request = None):
        table, choices = self._files(_user(request), collection)
        return table, gr.update(choices=choices, value=None)

    def _wait(self, job, progress: gr.Progress, desc: str) -> str:
        while not job.done_event.wait(0.25):
            done, total = job.progress()
            progress(done / total if total else 0.0, desc=f"{desc}: {done}/{total} files" if total else desc)
        if job.status == "failed":
            raise gr.Error(f"Indexing failed: {job.message}", title="Indexing failed")
        report = job.report or {}
        # every file that failed, and every one with text left out, on a line of its own (file names
        # come from users: shown as text, never as Markdown)
        lines = [f"- ✗ {safe_markdown(reason)}" for _, reason in report.get("failed", [])]
        lines += [f"- note: {safe_markdown(note)}" for _, note in report.get("notes", [])]
        head = safe_markdown(job.summary or job.message)
        return "\n".join([f"✓ {head}" + (":" if lines else "")] + lines)

    def add_documents(self, files: list[str] | None, collection: str | None, embedder: str | None = None,
                      request: gr.Request = None, progress=gr.Progress()):
        """(status, collection): the collection is handed on, so the events after it see a newly typed name."""
        user = _user(request)
        try:
            if not files:
                raise RagError("no file chosen; drop documents on the upload box first")
            if not (collection or "").strip():
                raise RagError("no collection named; pick one or type a new name in 'Into collection'")
            paths = self._uploaded(files)
            progress(0.0, desc="saving uploads")
            job = self.service.upload(user, collection, [(p.name, p) for p in paths], embedder=embedder)
        except RagError as err:
            raise _error(err) from err
        self._forget(paths)  # saved into the collection's upload folder: Gradio's copy is not needed
        return self._wait(job, progress, f"indexing into {collection}"), collection.strip()

    def _uploaded(self, files: list[str]) -> list[Path]:
        """The files, each checked to be one that Gradio's upload route wrote: a client can send
        any server path as a file value (gradio_client does), and it must never be read."""
        root = Path(gradio_upload_folder()).resolve()
        known = {Path(p).resolve() for p in list(self.uploaded)}
        out = []
        for f in files:
            path = Path(str(f))
            real = path.resolve()
            if path.is_symlink() or real not in known or not real.is_relative_to(root) or not real.is_file():
                raise RagError(f"{path.name}: not a file uploaded from this page; drop it on the upload box "
                               "(the page never reads files from the server's disk)")
            out.append(real)
        return out

    def _forget(self, paths: list[Path]) -> None:
        """Delete Gradio's temporary copies of uploads, so they cannot be fetched or reused."""
        gone = set(paths)
        for name in [n for n in list(self.uploaded) if Path(n).resolve() in gone]:
            self.uploaded.discard(name)
        for path in paths:
            path.unlink(missing_ok=True)
            try:
                path.parent.rmdir()  # Gradio keeps each upload in a folder of its own
            except OSError:
                pass

    def index_folder(self, folder: str, collection: str | None, embedder: str | None = None,
                     request: gr.Request = None, progress=gr.Progress()):
        try:
            if not (collection or "").strip():
                raise RagError("no collection named; pick one or type a new name in 'Into collection'")
            job = self.service.index_folder(_user(request), collection, folder, embedder=embedder)
        except RagError as err:
            raise _error(err) from err
        return self._wait(job, progress, f"indexing {folder}"), collection.strip()

    def remove_file(self, collection: str | None, source: str | None, request: gr.Request = None) -> str:
        try:
            if not source:
                raise RagError("no file chosen; pick the file to remove from the list")
            n = self.service.remove_file(_user(request), collection or "", source)
        except RagError as err:
            raise _error(err) from err
        return f"✓ removed {source} from {collection} ({n} chunks)"

    def jobs(self, request: gr.Request = None) -> str:
        try:
            jobs = self.service.jobs(_user(request))
        except RagError:
            return ""
        now = time.time()
        lines = []
        for job in jobs:
            if job.status in ("queued", "running"):
                done, total = job.progress()
                count = f" {done}/{total} files" if total else ""
                lines.append(f"… {job.status} {job.what} → {job.collection}{count}")
            elif now - job.finished < 60:
                lines.append(("✓ " if job.status == "done" else "✗ ") + job.message)
        return "\n\n".join(lines)


    # -- the Evaluate tab ------------------------------------------------------------------------------
    def eval_choices(self, current: str | None, request: gr.Request = None):
        names = self.service.collections(_user(request))
        value = current if current in names else (next((n for n in self.service.config.collections if n in names), None)
                                                  or (names[0] if names else None))
        return gr.update(choices=names, value=value)

    def evaluate(self, collection: str | None, source: str, n: float, unanswerable: float, jsonl: str, ks: str,
                 backend: str | None, model: str, gate_threshold: float | None, request: gr.Request = None,
                 progress=gr.Progress()):
        """(status, table, charts, download links) of one evaluation, run with the page's current settings
        while a progress bar follows it."""
        import json

        user = _user(request)
        try:
            if not collection:
                raise RagError("no collection chosen; pick the collection to evaluate")
            try:
                k_list = [int(k) for k in str(ks).replace(" ", "").split(",") if k]
            except ValueError:
                raise RagError(f"k {ks!r}: give passage counts separated by commas, e.g. 3,5") from None
            questions = None
            if source == EVAL_SOURCES[1]:
                questions = []
                for i, line in enumerate((jsonl or "").splitlines(), 1):
                    if line.strip():
                        try:
                            questions.append(json.loads(line))
                        except json.JSONDecodeError as e:
                            raise RagError(f"question line {i} is not JSON ({e.msg}); one JSON object a line") from None
            job = self.service.evaluate(user, collection, questions=questions, make=int(n),
                                        unanswerable=float(unanswerable), ks=k_list or None, backend=backend or None,
                                        model=model, gate_threshold=gate_threshold)
        except RagError as err:
            raise _error(err) from err
        progress(0.0, desc="starting")
        while not job.done_event.wait(0.3):
            progress(job.done / job.total if job.total else 0.0,
                     desc=f"{job.stage}: {job.done}/{job.total}" if job.total else (job.stage or "starting"))
        if job.status == "failed":
            raise gr.Error(f"The evaluation failed: {job.message}", title="Evaluation failed")
        return f"✓ {job.message}", job.markdown, eval_charts_html(job.files), eval_downloads_html(job.files)


def eval_charts_html(files: dict[str, str]) -> str:
    """The charts inline (data: URLs): Gradio's file route never serves files from its cache, where
    uploads live too (ragapp.serve.upload_guard), so results are not handed to it."""
    import base64

    parts = []
    for name, title in (("hallucination.png", "Hallucination and F1"), ("tradeoff.png", "The abstention trade-off")):
        if name in files:
            data = base64.b64encode(Path(files[name]).read_bytes()).decode()
            parts.append(f'<figure class="rag-chart"><img alt="{title}" src="data:image/png;base64,{data}">'
                         f"<figcaption>{title}</figcaption></figure>")
    return "\n".join(parts)


def eval_downloads_html(files: dict[str, str]) -> str:
    """Download links carrying the files (data: URLs), for the same reason as the charts."""
    import base64

    kinds = {"questions.jsonl": ("application/x-ndjson", "answers, per question and configuration"),
             "question-set.jsonl": ("application/x-ndjson", "the question set (edit it and run it again)"),
             "report.md": ("text/markdown", "the tables"), "report.json": ("application/json", "every number")}
    links = []
    for name, (mime, what) in kinds.items():
        if name in files:
            data = base64.b64encode(Path(files[name]).read_bytes()).decode()
            links.append(f'<li><a download="{name}" href="data:{mime};base64,{data}">{name}</a> — {what}</li>')
    return f"<ul class=\"rag-downloads\">{''.join(links)}</ul>" if links else ""


EVAL_SOURCES = ("Make questions from the collection", "Use my questions (JSONL below)")


# ----------------------------------------------------------------------------- the page


def build_demo(service: RagService) -> gr.Blocks:
    h = PageHandlers(service)
    cfg = service.config
    # delete_cache: uploads never added to a collection are deleted after an hour
    with gr.Blocks(title="ragapp — chat with your documents", fill_height=True, delete_cache=(600, 3600)) as demo:
        gr.Markdown("## ragapp — chat with your documents\nAnswers come only from your collections; "
                    "each [n] opens its source. Answers the documents do not hold say so.")
        with gr.Tabs(elem_id="tabs"):
            with gr.Tab("Chat", id="chat", elem_id="chat-tab"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=1, min_width=260):
                        # Choices are per user (filled on page load); the server checks every name it gets.
                        collections = gr.Dropdown(choices=cfg.collections, value=cfg.collections, multiselect=True,
                                                  allow_custom_value=True, label="Collections to ask", elem_id="collections")
                        with gr.Accordion("Add documents", open=True):
                            target = gr.Dropdown(choices=[], value=None, allow_custom_value=True, elem_id="target",
                                                 label="Into collection (pick, or type a new name)")
                            new_embedder = gr.Dropdown(service.embedder_choices, value=service.embedder_choices[0],
                                                       label="Embedder of a new collection", elem_id="embedder",
                                                       info="multilingual-e5-small: Chinese and other languages; "
                                                            "…-int8: faster indexing. A collection keeps its own.")
                            uploads = gr.File(file_count="multiple", file_types=list(SUPPORTED_EXTENSIONS), type="filepath",
                                              label="Documents", elem_id="uploads", height=120)
                            add_btn = gr.Button("Add to collection", variant="primary", elem_id="add-btn")
                            folder = gr.Textbox(label="…or index a folder on the server", placeholder="/path/to/documents",
                                                elem_id="folder")
                            folder_btn = gr.Button("Index folder", elem_id="folder-btn")
                            status = gr.Markdown(elem_id="status")
                            jobs = gr.Markdown(elem_id="jobs")
                        with gr.Accordion("Files in the collection", open=False):
                            files_table = gr.Dataframe(headers=["file", "chunks", "size"], interactive=False,
                                                       elem_id="files", wrap=True)
                            to_remove = gr.Dropdown(choices=[], label="Remove a file", elem_id="to-remove", allow_custom_value=True)
                            remove_btn = gr.Button("Remove file", variant="stop", elem_id="remove-btn")
                        with gr.Accordion("Settings", open=False):
                            k = gr.Slider(1, 20, value=cfg.k, step=1, label="Passages retrieved (k)")
                            backend = gr.Dropdown(list(BACKENDS), value=service.default_backend, label="Generator backend",
                                                  info="extractive: quote the best passage sentences, no model")
                            model = gr.Textbox(value=cfg.model or "", label="Model",
                                               placeholder="default model (llm) / folder or hub id (hf) / served name (openai)")
                            temperature = gr.Slider(0.0, 2.0, value=0.0, step=0.1, label="Temperature")
                            gate = gr.Checkbox(value=True, label="Grounding gate: answer “not in your documents” when the evidence is weak")
                            gate_threshold = gr.Slider(0.0, 1.0, value=service.gate_threshold, step=0.01, label="Gate threshold",
                                                       info="evidence needed to answer; the default is calibrated (higher abstains more)")
                    with gr.Column(scale=2, min_width=380):
                        sources = gr.HTML(PANEL_EMPTY, js_on_load=CITE_JS, elem_id="sources", render=False)
                        gr.ChatInterface(
                            h.respond,
                            chatbot=gr.Chatbot(elem_id="chat", height=620, buttons=["copy", "copy_all"], feedback_options=None,
                                               placeholder="Ask a question about your documents."),
                            textbox=gr.Textbox(placeholder="Ask about your documents…", elem_id="question", submit_btn=True,
                                               stop_btn=True),
                            additional_inputs=[collections, k, backend, model, temperature, gate, gate_threshold],
                            additional_outputs=[sources],
                            api_name="chat", concurrency_limit=8, fill_height=True, autofocus=True,
                        )
                    with gr.Column(scale=1, min_width=300):
                        gr.Markdown("### Sources")
                        sources.render()

            with gr.Tab("Evaluate", id="evaluate", elem_id="evaluate-tab") as eval_tab:
                gr.Markdown("How often does this setup make things up? Ask a question set of a collection with the "
                            "current settings (generator, k, gate threshold) and the extractive answer alone; each "
                            "number has a 95% interval. A made set asks about names and numbers of sampled passages; "
                            "its unanswerable questions come from files held out of a temporary copy of the index.")
                with gr.Row(equal_height=False):
                    with gr.Column(scale=1, min_width=260):
                        # choices are per user (filled when the tab opens); the server checks the name it gets
                        eval_collection = gr.Dropdown(choices=[], value=None, label="Collection to evaluate",
                                                      allow_custom_value=True, elem_id="eval-collection")
                        eval_source = gr.Radio(list(EVAL_SOURCES), value=EVAL_SOURCES[0], label="Question set",
                                               elem_id="eval-source")
                        eval_n = gr.Slider(2, 200, value=20, step=1, label="Questions to make", elem_id="eval-n")
                        eval_unanswerable = gr.Slider(0.0, 0.8, value=0.3, step=0.05, elem_id="eval-unanswerable",
                                                      label="Share unanswerable (their file held out)")
                        eval_jsonl = gr.Textbox(lines=5, elem_id="eval-jsonl", label="My questions (JSONL)",
                                                placeholder='{"question": "...", "answers": ["..."], "answerable": true, '
                                                            '"source": "file.pdf"}')
                        eval_ks = gr.Textbox(value=str(cfg.k), label="k (several compare: 3,5,10)", elem_id="eval-k")
                        eval_btn = gr.Button("Run evaluation", variant="primary", elem_id="eval-btn")
                        eval_status = gr.Markdown(elem_id="eval-status")
                        eval_files = gr.HTML(elem_id="eval-files")
                    with gr.Column(scale=3, min_width=420):
                        eval_table = gr.Markdown(elem_id="eval-table")
                        eval_charts = gr.HTML(elem_id="eval-charts")

        lists = [collections, target, files_table, to_remove]
        demo.load(h.refresh, [collections, target], lists, api_visibility="private")
        sources.cite(h.show_citation, None, sources, api_visibility="private", show_progress="hidden")
        target.change(h.show_files, target, [files_table, to_remove], api_visibility="private", show_progress="hidden")
        add_btn.click(h.add_documents, [uploads, target, new_embedder], [status, target], api_name="add_documents",
                      concurrency_limit=2
                      ).success(h.refresh_adding, [collections, target], lists, api_visibility="private"
                      ).then(lambda: None, None, uploads, api_visibility="private")
        folder_btn.click(h.index_folder, [folder, target, new_embedder], [status, target], api_name="index_folder",
                         concurrency_limit=2
                         ).success(h.refresh_adding, [collections, target], lists, api_visibility="private")
        remove_btn.click(h.remove_file, [target, to_remove], status, api_name="remove_file"
                         ).then(h.refresh, [collections, target], lists, api_visibility="private")
        demo.load(h.eval_choices, eval_collection, eval_collection, api_visibility="private")
        eval_tab.select(h.eval_choices, eval_collection, eval_collection, api_visibility="private",
                        show_progress="hidden")  # collections made since the page was opened
        eval_btn.click(h.evaluate, [eval_collection, eval_source, eval_n, eval_unanswerable, eval_jsonl, eval_ks,
                                    backend, model, gate_threshold],
                       [eval_status, eval_table, eval_charts, eval_files], api_name="evaluate",
                       concurrency_limit=1)
        timer = gr.Timer(2.0)
        timer.tick(h.jobs, None, jobs, api_visibility="private", show_progress="hidden", queue=False)
    h.uploaded = demo.upload_file_set
    demo.queue(default_concurrency_limit=4)
    return demo


def gradio_upload_folder() -> str:
    """Where Gradio's upload route writes (GRADIO_TEMP_DIR)."""
    from gradio.utils import get_upload_folder

    return get_upload_folder()


def __getattr__(name: str):
    """`from ragapp.serve.ui import demo`: the page over $RAGAPP_INDEX_DIR, built on first use."""
    if name == "demo":
        global demo
        demo = build_demo(RagService(ServeConfig()))
        return demo
    raise AttributeError(name)


if __name__ == "__main__":
    page = build_demo(RagService(ServeConfig()))
    page.launch(server_name="127.0.0.1", css=CSS, head=HEAD)
