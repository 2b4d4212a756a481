"""Answer quality on SQuAD 2.0 (dev-half, evaluation only): retrieval from all 646 paragraphs, then
each answering system. Writes the `quality` section of BENCHMARKS.md.

    nice -n 10 .venv/bin/python benchmarks/bench_quality.py                         # rows without a generator, all 6,078 questions
    nice -n 10 .venv/bin/python benchmarks/bench_quality.py --systems all           # + the default model (models/ragchat)
    nice -n 10 .venv/bin/python benchmarks/bench_quality.py --systems all --subset 600   # fixed random 600 questions
    .venv/bin/python benchmarks/bench_quality.py --systems all --backend openai --model NAME --limit 50 --no-write

Per-question results are kept under .cache/squad2-eval/results/, so an interrupted run resumes and
rows computed earlier (e.g. the extractive ones) are not recomputed. See ragapp/eval/evaluate.py for the
scoring (the official SQuAD 2.0 normalisation) and the definition of each column.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._report import machine, publish  # noqa: E402
from ragapp.eval import evaluate as ev  # noqa: E402  (light: heavy imports happen inside run)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ev.add_args(ap)
    ap.add_argument("--no-write", action="store_true", help="print the table only; leave BENCHMARKS.md alone")
    args = ap.parse_args(argv)
    systems = ev.parse_systems(args.systems)
    scores = ev.run(systems, args.data, args.workdir, args.k, args.backend, args.model, args.subset, args.seed,
                    args.limit, args.max_new_tokens)
    (args.workdir / "summary.json").write_text(json.dumps(scores, indent=2) + "\n")
    n = next(iter(scores.values()))["questions"]
    selection = (f"a fixed random subset of {args.subset} questions (seed {args.seed})" if args.subset else "all questions")
    if args.limit:
        selection += f", first {args.limit}"
    flags = " ".join(a for a in (argv if argv is not None else sys.argv[1:]) if a != "--no-write")
    md = "\n".join([
        "## Answer quality (SQuAD 2.0 dev-half, retrieval over all 646 paragraphs)",
        "",
        f"{n} questions ({selection}); hybrid retrieval k={args.k} with all-MiniLM-L6-v2; {machine()}.",
        "Scoring: the official SQuAD 2.0 normalisation; an abstention is the empty answer. *Hallucination* = answers "
        "to unanswerable questions + answers failing the citation check, over all questions. *Gold passage retrieved*: "
        "answerable questions whose own paragraph is among the passages used (generator rows: those that fit the model's context).",
        "",
        ev.table(scores),
        "",
        "References (from ../shared/data/README.md): always abstaining scores 52.1 EM on this half; extractive readers "
        "fine-tuned from pretrained encoders score 76-79 EM on the full dev set with the gold paragraph given.",
        "",
        f"Remake: `{' '.join(['nice -n 10 .venv/bin/python benchmarks/bench_quality.py', flags]).strip()}`",
    ])
    publish("quality", md, write=not args.no_write)


if __name__ == "__main__":
    main()
