"""Evaluation: how often a setup makes things up, on public sets and on the user's own documents.

    squad      SQuAD 2.0 scoring (the one implementation) and data     beir       BEIR loading and metrics
    questions  question sets (JSONL, SQuAD, BEIR)                      writers    question writers (template, generator)
    make_set   a question set made from an index (held-out evidence)   holdout    an index copy without some files
    metrics    per-question metrics, bootstrap intervals               runner     run(...) -> EvalReport
    report     EvalReport and its files                                charts     its PNG charts
    cache      resumable per-question answers                          evaluate   the SQuAD 2.0 benchmark (benchmarks/)
    question_set   the hand-written fact-check set of the default model's tests

May import answer and every stage below it. `ragapp.eval.run` and `ragapp.eval.EvalReport` are loaded on first use.
"""


def __getattr__(name: str):
    if name == "run":
        from ragapp.eval.runner import run

        return run
    if name == "EvalReport":
        from ragapp.eval.report import EvalReport

        return EvalReport
    raise AttributeError(name)
