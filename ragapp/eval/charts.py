"""The PNG charts of an EvalReport (matplotlib, drawn off screen).

    hallucination.png   per configuration: hallucination rate and F1, each with its 95% interval
    tradeoff.png        per retrieval configuration, as the gate threshold moves: left, hallucination
                        rate and F1 against the threshold; right, the abstention trade-off (answerable
                        questions answered against unanswerable questions abstained on), the
                        calibrated threshold marked
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ragapp.eval.report import EvalReport


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display: files only (also safe in the server's threads)
    import matplotlib.pyplot as plt

    return plt


def _pct(x: float, default: float = 0.0) -> float:
    return default if x != x else 100.0 * x  # NaN (nothing counted): drawn at the default


def hallucination_chart(report: "EvalReport", path: Path) -> Path:
    plt = _pyplot()
    rows = report.rows
    labels = [r.label for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.45 * len(rows) + 1.6), sharey=True)
    for ax, name, title, color in ((axes[0], "hallucination", "hallucination rate (%)", "#c2410c"),
                                   (axes[1], "f1", "F1 (%)", "#1d4ed8")):
        rates = [r.metrics[name] for r in rows]
        values = [_pct(m.value) for m in rates]
        err = [[max(0.0, v - _pct(m.low, v)) for v, m in zip(values, rates)],
               [max(0.0, _pct(m.high, v) - v) for v, m in zip(values, rates)]]
        ax.barh(range(len(rows)), values, xerr=err, color=color, alpha=0.8, capsize=3)
        ax.set_xlim(0, 100)
        ax.set_title(title)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(rows)), labels)
    axes[0].invert_yaxis()
    fig.suptitle(f"{report.questions} questions ({report.unanswerable} unanswerable); bars: 95% bootstrap intervals",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def tradeoff_chart(report: "EvalReport", path: Path) -> Path:
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    t0 = report.gate_threshold
    for i, (label, points) in enumerate(report.tradeoff.items()):
        color = f"C{i % 10}"
        ts = [p["threshold"] for p in points]
        for name, style in (("hallucination", "-"), ("f1", "--")):
            ys = [100 * p[name] if p[name] is not None else float("nan") for p in points]
            left.plot(ts, ys, style, color=color, label=f"{label}: {'hallucination' if name != 'f1' else 'F1'}")
        xs = [100 * p["answerable_answered"] if p["answerable_answered"] is not None else float("nan") for p in points]
        ys = [100 * p["abstention_recall"] if p["abstention_recall"] is not None else float("nan") for p in points]
        right.plot(xs, ys, "-", color=color, label=label)
        at = min(points, key=lambda p: abs(p["threshold"] - t0))
        if at["answerable_answered"] is not None and at["abstention_recall"] is not None:
            right.plot([100 * at["answerable_answered"]], [100 * at["abstention_recall"]], "o", color=color)
    left.axvline(t0, color="grey", lw=0.8, ls=":")
    left.set_xlabel(f"gate threshold (calibrated: {t0:.3f}, dotted)")
    left.set_ylabel("%")
    left.set_ylim(0, 100)
    left.legend(fontsize=7)
    left.grid(alpha=0.3)
    right.set_xlabel("answerable questions answered (%)")
    right.set_ylabel("unanswerable questions abstained on (%)")
    right.set_xlim(0, 100)
    right.set_ylim(0, 100)
    right.set_title("the abstention trade-off (dot: calibrated threshold)", fontsize=10)
    right.legend(fontsize=7)
    right.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
