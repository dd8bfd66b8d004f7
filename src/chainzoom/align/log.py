"""The training log: one CSV row per GRPO step, and the reward curves drawn from it.

Why our own CSV rather than TRL's ``log_history``: it is on disk after every step, so
an interrupted run keeps it, a resumed run continues it (rows past the checkpoint
it resumes from are dropped, since those steps run again), and the plot is redrawn
from the file alone.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from chainzoom.io.atomic import atomic_write

#: Columns besides one per reward component.
BASE_COLUMNS = ("step", "reward", "reward_std", "kl", "loss", "flat_groups", "completion_length", "seconds")
_TRL_KEYS = {
    "reward": "reward",
    "reward_std": "reward_std",
    # Share of groups whose prompts all scored the same: they teach nothing (zero advantage).
    "flat_groups": "frac_reward_zero_std",
    "kl": "kl",
    "loss": "loss",
    "completion_length": "completions/mean_length",
    "seconds": "step_time",
}


def columns(reward_names: Sequence[str], extra: Sequence[str] = ()) -> list[str]:
    return [*BASE_COLUMNS[:3], *reward_names, *BASE_COLUMNS[3:], *extra]


def row_from_trl(step: int, logs: dict, reward_names: Sequence[str], extra: Sequence[str] = ()) -> dict[str, object]:
    """A CSV row from TRL's per-step logs (``kl`` is blank when ``--beta 0`` computes none).

    ``extra`` names metrics the rewards logged themselves (``critic_unusable``).
    """
    row: dict[str, object] = {"step": step}
    for column, key in _TRL_KEYS.items():
        row[column] = logs.get(key, "")
    for name in reward_names:
        row[name] = logs.get(f"rewards/{name}/mean", "")
    for name in extra:
        row[name] = logs.get(name, "")
    return row


class StepLog:
    """Appends rows to ``path``; :meth:`truncate` drops the steps a resumed run repeats."""

    def __init__(self, path: Path, reward_names: Sequence[str], extra: Sequence[str] = ()) -> None:
        self.path = path
        self.names = list(reward_names)
        self.extra = list(extra)
        self.fields = columns(self.names, self.extra)

    def rows(self) -> list[dict[str, str]]:
        if not self.path.is_file():
            return []
        with self.path.open(newline="", encoding="utf-8") as stream:
            return [row for row in csv.DictReader(stream) if row.get("step", "").isdigit()]

    def truncate(self, last_step: int) -> None:
        """Keep only the rows up to ``last_step`` (0 starts the log afresh)."""
        kept = [row for row in self.rows() if int(row["step"]) <= last_step]

        def write(tmp: Path) -> None:
            with tmp.open("w", newline="", encoding="utf-8") as stream:
                writer = csv.DictWriter(stream, fieldnames=self.fields, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(kept)

        atomic_write(self.path, write)

    def append(self, row: dict[str, object]) -> None:
        with self.path.open("a", newline="", encoding="utf-8") as stream:
            csv.DictWriter(stream, fieldnames=self.fields, extrasaction="ignore").writerow(row)


def plot_curves(log: Path, png: Path, weights: dict[str, float], title: str = "GRPO alignment") -> Path:
    """Draw the total reward, each weighted component and the KL per step (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with log.open(newline="", encoding="utf-8") as stream:
        rows = [row for row in csv.DictReader(stream) if row.get("step", "").isdigit()]
    steps = [int(row["step"]) for row in rows]

    def series(column: str) -> list[float]:
        return [float(row[column]) if row.get(column) not in (None, "") else float("nan") for row in rows]

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True, height_ratios=(3, 1.3))
    top.plot(steps, series("reward"), color="black", linewidth=2, label="total (weighted)")
    for name, weight in weights.items():
        top.plot(steps, [weight * v for v in series(name)], linewidth=1.2, label=f"{weight:g}·{name}")
    top.set_ylabel("mean reward per step")
    top.legend(loc="best", fontsize=8)
    top.grid(alpha=0.3)
    top.set_title(title)
    bottom.plot(steps, series("kl"), color="tab:red", linewidth=1.2)
    bottom.set_ylabel("KL to reference")
    bottom.set_xlabel("step")
    bottom.grid(alpha=0.3)
    figure.tight_layout()
    atomic_write(png, lambda tmp: figure.savefig(tmp, dpi=110))
    plt.close(figure)
    return png
