"""Write an evaluation's results: ``results.csv``, ``report.md`` with tables like the paper's, plots, grids.

A table per metric: a row per mode, a column per magnification, each cell the mean
± the sample standard deviation over the images (just the mean when one image has a
value), the best mode of each column in bold when the metric has a direction.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from chainzoom import __version__
from chainzoom.config import eval_rows
from chainzoom.evaluation.harness import EvalResults, ResultRow
from chainzoom.evaluation.plots import plot_metric, sample_grid
from chainzoom.io.atomic import atomic_write
from chainzoom.metrics.catalog import NO_REFERENCE

RESULTS_CSV = "results.csv"
REPORT_MD = "report.md"

#: Metrics the harness adds beside the no-reference ones: name -> (label, direction).
DERIVED = {
    "fidelity_psnr": ("Fidelity PSNR (dB)", "higher"),
    "fidelity_ssim": ("Fidelity SSIM", "higher"),
    "drift_psnr": ("Drift PSNR (dB): each state vs the state before", "higher"),
    "drift_delta_e": ("Drift ΔE*ab: mean Lab colour shift vs the state before", "lower"),
    "drift_x0_delta_e": ("Cumulative drift ΔE*ab: mean Lab colour shift vs the input's region", "lower"),
    "seconds": ("Seconds to reach the magnification: every step's time, summed", "lower"),
}
DECIMALS = {"seconds": 1, "sharpness": 1, "fidelity_psnr": 2, "drift_psnr": 2, "brisque": 2, "fidelity_ssim": 4}
ARROWS = {"lower": " ↓", "higher": " ↑", None: ""}

Stats = dict[tuple[str, int], tuple[float, float, int]]


def describe(name: str) -> tuple[str, str | None]:
    return NO_REFERENCE.get(name) or DERIVED[name]


def summarise(rows: list[ResultRow], metric: str) -> Stats:
    """(mode, scale) -> (mean, sample std or 0 for one value, count) over the images."""
    groups: dict[tuple[str, int], list[float]] = defaultdict(list)
    for row in rows:
        if row.metric == metric and math.isfinite(row.value):
            groups[(row.mode, row.scale)].append(row.value)
    return {key: (statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0, len(v)) for key, v in groups.items()}


def write_csv(rows: list[ResultRow], path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image", "mode", "scale", "metric", "value"])
    for row in rows:
        writer.writerow([row.image, row.mode, row.scale, row.metric, f"{row.value:.6f}"])
    text = buffer.getvalue()
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def markdown_table(metric: str, modes: Sequence[str], scales: Sequence[int], stats: Stats) -> str:
    better = describe(metric)[1]
    digits = DECIMALS.get(metric, 3)
    best: dict[int, float] = {}
    if better is not None:
        pick = min if better == "lower" else max
        for scale in scales:
            values = [stats[(m, scale)][0] for m in modes if (m, scale) in stats]
            if len(values) > 1:
                best[scale] = pick(values)
    lines = ["| mode | " + " | ".join(f"x{s}" for s in scales) + " |", "|---" * (len(scales) + 1) + "|"]
    for mode in modes:
        cells = []
        for scale in scales:
            if (mode, scale) not in stats:
                cells.append("—")
                continue
            mean, std, n = stats[(mode, scale)]
            cell = f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if n > 1 else "")
            cells.append(f"**{cell}**" if best.get(scale) == mean else cell)
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _section(results: EvalResults, metric: str, scales: Sequence[int], out: Path, min_side: int = 1) -> list[str]:
    """One metric's heading, table and plot; a metric left without values by its size limit says so."""
    label, better = describe(metric)
    stats = summarise(results.rows, metric)
    if not stats:
        if min_side <= 1:
            return []
        return [f"### {label}{ARROWS[better]}", "", f"No value: it needs states of at least {min_side} px a side.", ""]
    modes = [row.label for row in eval_rows(results.settings)]
    plot = Path("plots") / f"{metric}.png"
    plot_metric(label + ARROWS[better], modes, scales, stats, out / plot)
    table = markdown_table(metric, modes, scales, stats)
    return [f"### {label}{ARROWS[better]}", "", table, "", f"![{label}]({plot.as_posix()})", ""]


def write_report(results: EvalResults, command: str) -> Path:
    """Write ``results.csv``, the plots, the grids and ``report.md`` into the output folder."""
    settings = results.settings
    out = Path(settings.out)
    write_csv(results.rows, out / RESULTS_CSV)
    scales = settings.scales
    names = list(results.samples)
    lines = [
        "# Chain-of-Zoom evaluation",
        "",
        f"`{command}` (chainzoom {__version__})",
        "",
        f"- images ({len(names)}): {', '.join(names)}",
        f"- rows: {', '.join(row.label for row in eval_rows(settings))}; backbone `{settings.backbone_spec}`, prompter `{settings.prompter_spec}`",
        f"- magnifications: {', '.join(f'x{s}' for s in scales)}, zooming into the centre; "
        f"view: {settings.view or 'the input size (512 px long side above 1024 px)'}",
        "",
        "Each cell: mean ± sample standard deviation over the images that have a value "
        "(the mean alone when one does). ↓ lower is better, ↑ higher is better; "
        "the best mode of each column is in bold. Raw values: `results.csv`.",
        "",
        "## No-reference quality of the state at each magnification",
        "",
    ]
    for measured in results.metrics:
        lines += _section(results, measured.name, scales, out, measured.min_side)
    if results.unavailable:
        lines += ["### Not available", ""]
        lines += [f"- {u.label}: {u.reason}" for u in results.unavailable]
        lines.append("")
    if settings.fidelity:
        lines += [
            "## Fidelity",
            "",
            "The image, cropped to a multiple of S and downscaled S times (bicubic, antialiased), "
            "zoomed S times back into its centre; the final state against the original pixels it shows.",
            "",
        ]
        for metric in ("fidelity_psnr", "fidelity_ssim"):
            lines += _section(results, metric, scales, out)
    if settings.drift:
        drift_scales = sorted({r.scale for r in results.rows if r.metric == "drift_psnr"})
        lines += [
            "## Drift across steps",
            "",
            "Column xM: the step that made the state at xM, downscaled to the state before it "
            "and compared with the region of that state it shows.",
            "",
        ]
        for metric in ("drift_psnr", "drift_delta_e", "drift_x0_delta_e"):
            lines += _section(results, metric, drift_scales, out)
    lines += [
        "## Time",
        "",
        "Each step's recorded `seconds.total` (backbone, prompt, consistency, an adaptive policy's "
        "candidates and scores), summed up to the state at xM: on the machine, and under the load, "
        "each run was made with.",
        "",
    ]
    lines += _section(results, "seconds", scales, out)
    if results.notes:
        lines += ["## Notes", ""] + [f"- {note}" for note in results.notes] + [""]
    lines += ["## Samples", ""]
    for name, samples in results.samples.items():
        if not any(samples.values()):
            lines += [f"{name}: no row has a state at these magnifications (see the notes).", ""]
            continue
        grid = Path("grids") / f"{name}.png"
        sample_grid(name, samples, scales, out / grid)
        lines += [f"![{name}]({grid.as_posix()})", ""]
    text = "\n".join(lines)
    path = out / REPORT_MD
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path
