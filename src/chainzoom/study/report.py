"""``chainzoom study report``: the votes as markdown with plots, and the same numbers as JSON.

Raters who chose the blurred side of the attention check are left out entirely (their
count is reported); raters who have not reached it yet are counted. Everything is
written atomically into ``STUDY/report/``: ``report.md``, ``report.json`` (what a script
or a test reads), ``scores.png`` (Bradley–Terry scores with their intervals) and
``wins.png`` (the pairwise win-rate matrix).
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections import defaultdict
from pathlib import Path
from typing import Any

from chainzoom.io.atomic import atomic_write, atomic_write_json
from chainzoom.study.create import ATTENTION_SHARP, VOTES, StudyError, load_study
from chainzoom.study.stats import BOOTSTRAP_RESAMPLES, CONFIDENCE, PRIOR_PRECISION, method_scores, pair_tests
from chainzoom.study.store import Vote, VoteStore

REPORT = "report"


def summarize(study: dict[str, Any], votes: list[Vote], seed: int = 0) -> dict[str, Any]:
    """The report's numbers from the study's trials and its votes (pure)."""
    trials = {t["id"]: t for t in study["trials"]}
    methods = list(study["methods"])
    checks: dict[str, list[bool]] = defaultdict(list)
    for vote in votes:
        if trials.get(vote.trial, {}).get("attention"):
            checks[vote.rater].append(vote.choice == ATTENTION_SHARP)
    failed = sorted(rater for rater, passed in checks.items() if not all(passed))
    counted = [v for v in votes if v.rater not in failed and v.trial in trials and not trials[v.trial].get("attention")]
    comparisons = [(v.choice, v.other) for v in counted]
    raters = sorted({v.rater for v in votes})
    return {
        "methods": methods,
        "votes": len(votes),
        "counted_votes": len(comparisons),
        "raters": len(raters),
        "raters_failed_attention": failed,
        "raters_unchecked": sorted(r for r in raters if r not in checks),
        "median_seconds": _median([v.seconds for v in counted]),
        "left_chosen": sum(v.side == "left" for v in counted),
        "scores": [dataclasses.asdict(s) for s in method_scores(comparisons, methods, seed=seed)],
        "pairs": [dataclasses.asdict(p) for p in pair_tests(comparisons, methods)],
        "bootstrap_resamples": BOOTSTRAP_RESAMPLES,
        "confidence": CONFIDENCE,
        "prior_precision": PRIOR_PRECISION,
    }


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _number(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or value != value else f"{value:.{digits}f}"  # value != value: NaN


def _p_value(p: float | None) -> str:
    if p is None:
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def markdown(summary: dict[str, Any], study: dict[str, Any]) -> str:
    level = int(summary["confidence"] * 100)
    lines = [
        "# User study report",
        "",
        f"Question: *{study.get('question', '')}*",
        "",
        f"{summary['counted_votes']} votes counted of {summary['votes']} from {summary['raters']} raters"
        f" ({len(summary['raters_failed_attention'])} left out for failing the attention check"
        f"{': ' + ', '.join(summary['raters_failed_attention']) if summary['raters_failed_attention'] else ''};"
        f" {len(summary['raters_unchecked'])} not yet checked). Median time per vote:"
        f" {_number(summary['median_seconds'], 1)} s; the left side was chosen {summary['left_chosen']} times.",
        "",
        "## Methods",
        "",
        f"| method | wins | comparisons | win rate | Bradley–Terry score | {level}% interval |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for s in sorted(summary["scores"], key=lambda s: -s["bt"]):
        lines.append(
            f"| {s['method']} | {s['wins']} | {s['comparisons']} | {_number(s['win_rate'])} | {_number(s['bt'])}"
            f" | [{_number(s['bt_low'])}, {_number(s['bt_high'])}] |"
        )
    lines += [
        "",
        "Bradley–Terry: P(i preferred to j) = σ(θᵢ − θⱼ), θ fitted by maximum likelihood with a weak"
        f" Gaussian prior (precision {summary['prior_precision']:g}) and centred on 0; intervals are"
        f" percentile bootstraps over {summary['bootstrap_resamples']} resamples of the votes.",
        "",
        "![Bradley–Terry scores](scores.png)",
        "",
        "## Pairs",
        "",
        "| method A | method B | A wins | B wins | A's win rate | sign test p (two-sided) |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for p in summary["pairs"]:
        n = p["first_wins"] + p["second_wins"]
        rate = p["first_wins"] / n if n else None
        lines.append(
            f"| {p['first']} | {p['second']} | {p['first_wins']} | {p['second_wins']} | {_number(rate)}"
            f" | {_p_value(p['p_value'])} |"
        )
    lines += ["", "Sign test: exact binomial test of wins against p = 0.5.", "", "![Win rates](wins.png)", ""]
    return "\n".join(lines)


def _plots(summary: dict[str, Any], folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    from matplotlib import pyplot as plt

    scores = sorted(summary["scores"], key=lambda s: s["bt"])
    figure, axes = plt.subplots(figsize=(6, 0.5 + 0.5 * len(scores)))
    y = np.arange(len(scores))
    bt = np.array([s["bt"] for s in scores])
    low = np.array([s["bt"] if s["bt_low"] is None else s["bt_low"] for s in scores])
    high = np.array([s["bt"] if s["bt_high"] is None else s["bt_high"] for s in scores])
    axes.errorbar(bt, y, xerr=np.vstack([bt - low, high - bt]), fmt="o", capsize=4)
    axes.set_yticks(y, [s["method"] for s in scores])
    axes.axvline(0, color="grey", lw=0.5)
    axes.set_xlabel(f"Bradley–Terry score ({int(summary['confidence'] * 100)}% bootstrap interval)")
    figure.tight_layout()
    atomic_write(folder / "scores.png", lambda tmp: figure.savefig(tmp, dpi=120))
    plt.close(figure)

    methods = summary["methods"]
    index = {m: i for i, m in enumerate(methods)}
    rates = np.full((len(methods), len(methods)), np.nan)
    for p in summary["pairs"]:
        n = p["first_wins"] + p["second_wins"]
        if n:
            rates[index[p["first"]], index[p["second"]]] = p["first_wins"] / n
            rates[index[p["second"]], index[p["first"]]] = p["second_wins"] / n
    figure, axes = plt.subplots(figsize=(1.5 + 1.0 * len(methods), 1.0 + 0.9 * len(methods)))
    image = axes.imshow(rates, vmin=0, vmax=1, cmap="RdBu")
    for (row, col), value in np.ndenumerate(rates):
        if value == value:
            axes.text(col, row, f"{value:.2f}", ha="center", va="center")
    axes.set_xticks(range(len(methods)), methods, rotation=30, ha="right")
    axes.set_yticks(range(len(methods)), methods)
    axes.set_xlabel("against")
    axes.set_ylabel("win rate of")
    figure.colorbar(image)
    figure.tight_layout()
    atomic_write(folder / "wins.png", lambda tmp: figure.savefig(tmp, dpi=120))
    plt.close(figure)


def write_report(folder: Path, seed: int = 0) -> Path:
    """Write the report of the study in ``folder``; return the markdown file's path."""
    folder = Path(folder)
    study = load_study(folder)
    for package in ("scipy", "matplotlib"):
        if importlib.util.find_spec(package) is None:
            raise StudyError(f"chainzoom study report needs {package}: pip install 'chainzoom[eval]'")
    if not (folder / VOTES).is_file():
        raise StudyError(f"{folder} has no votes yet (serve it with chainzoom study serve)")
    summary = summarize(study, VoteStore(folder / VOTES).votes(), seed)
    out = folder / REPORT
    out.mkdir(exist_ok=True)
    _plots(summary, out)
    atomic_write_json(out / "report.json", summary)
    text = markdown(summary, study)
    return atomic_write(out / "report.md", lambda tmp: tmp.write_text(text, encoding="utf-8"))
