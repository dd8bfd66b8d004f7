"""The statistics of a pairwise study: win rates, Bradley–Terry scores with bootstrap intervals, sign tests.

Input is a list of ``(winner, loser)`` comparisons (ties cannot happen: the page forces a
choice). Everything here is pure and deterministic for a given ``seed``.

* **Win rate** of a method: its wins over its comparisons, against every other method.
* **Bradley–Terry**: P(i beats j) = σ(θ_i − θ_j). θ is the maximum-likelihood fit with
  a weak Gaussian prior (``PRIOR_PRECISION``: θ ~ N(0, 1/λ), σ ≈ 31), which keeps it finite
  when a method won (or lost) every comparison and changes it by well under 0.01 otherwise;
  the prior also fixes the scale's origin (Σθ = 0 at the optimum).
* **Bootstrap interval**: percentile interval of θ over votes resampled with replacement
  (scipy.stats.bootstrap).
* **Sign test** per pair: two-sided exact binomial test of "each side wins half the time"
  (scipy.stats.binomtest).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

#: λ of the Gaussian prior on the Bradley–Terry scores (see the module docstring).
PRIOR_PRECISION = 1e-3
BOOTSTRAP_RESAMPLES = 1000
CONFIDENCE = 0.95
#: Newton steps of a Bradley–Terry fit at most (it needs fewer than 30 even when a method wins everything).
MAX_NEWTON_STEPS = 200


@dataclass(frozen=True)
class MethodScore:
    method: str
    wins: int
    comparisons: int
    win_rate: float | None
    bt: float
    bt_low: float | None  # None: too few votes to resample
    bt_high: float | None


@dataclass(frozen=True)
class PairTest:
    first: str
    second: str
    first_wins: int
    second_wins: int
    p_value: float | None


def _indices(comparisons: Sequence[tuple[str, str]], methods: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    index = {m: i for i, m in enumerate(methods)}
    winners = np.array([index[w] for w, _ in comparisons], dtype=np.intp)
    losers = np.array([index[loser] for _, loser in comparisons], dtype=np.intp)
    return winners, losers


def win_counts(winners: np.ndarray, losers: np.ndarray, count: int) -> np.ndarray:
    """``W[i, j]``: how often method ``i`` beat method ``j`` (all the Bradley–Terry fit needs)."""
    return np.bincount(winners * count + losers, minlength=count * count).reshape(count, count).astype(float)


def bradley_terry(wins: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
    """θ from a win-count matrix (see the module docstring), by Newton's method with backtracking.

    The objective is convex and its Hessian positive definite (the prior), so Newton
    converges in a few steps. It is hand-written, not scipy.optimize, because a report fits
    it once per bootstrap resample: a general minimiser's overhead per call (milliseconds)
    made a report of 1000 resamples take seconds; this takes a fraction of one. Each
    resample starts from the full data's fit (``start``).
    """
    games = wins + wins.T
    count = len(wins)

    def loss(theta: np.ndarray) -> float:
        margin = theta[:, None] - theta[None, :]
        return float((wins * np.logaddexp(0.0, -margin)).sum() + 0.5 * PRIOR_PRECISION * theta @ theta)

    theta = np.zeros(count) if start is None else start.astype(float)
    for _ in range(MAX_NEWTON_STEPS):
        p = 1.0 / (1.0 + np.exp(-(theta[:, None] - theta[None, :])))  # P(row beats column)
        upset = wins * (1.0 - p)
        gradient = upset.sum(axis=0) - upset.sum(axis=1) + PRIOR_PRECISION * theta
        weight = games * p * (1.0 - p)
        hessian = np.diag(weight.sum(axis=1)) - weight + PRIOR_PRECISION * np.eye(count)
        step = np.linalg.solve(hessian, gradient)
        current, size = loss(theta), 1.0
        # The Newton decrement bounds how far the loss is above its minimum: stop once that is
        # below what float64 can tell apart in the loss (θ is then within ~1e-6 of the optimum).
        if gradient @ step < 1e-13 * (1.0 + current):
            break
        while size > 1e-12 and loss(theta - size * step) > current - 0.25 * size * gradient @ step:
            size /= 2
        theta = theta - size * step
    return theta


def method_scores(
    comparisons: Sequence[tuple[str, str]],
    methods: Sequence[str],
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> list[MethodScore]:
    """Win rate, Bradley–Terry score and its bootstrap interval for each of ``methods``."""
    from scipy.stats import bootstrap

    winners, losers = _indices(comparisons, methods)
    theta = bradley_terry(win_counts(winners, losers, len(methods)))
    if len(comparisons) >= 2:
        interval = bootstrap(
            (np.arange(len(comparisons)),),
            lambda rows: bradley_terry(win_counts(winners[rows], losers[rows], len(methods)), theta),
            n_resamples=resamples,
            vectorized=False,
            method="percentile",
            confidence_level=CONFIDENCE,
            rng=np.random.default_rng(seed),
        ).confidence_interval
        low: list[float | None] = [float(v) for v in np.atleast_1d(interval.low)]
        high: list[float | None] = [float(v) for v in np.atleast_1d(interval.high)]
    else:
        low = high = [None] * len(methods)
    scores = []
    for i, method in enumerate(methods):
        wins = int((winners == i).sum())
        total = wins + int((losers == i).sum())
        scores.append(
            MethodScore(method, wins, total, wins / total if total else None, float(theta[i]), low[i], high[i])
        )
    return scores


def pair_tests(comparisons: Sequence[tuple[str, str]], methods: Sequence[str]) -> list[PairTest]:
    """For each pair of methods, the wins each way and the two-sided sign test's p-value."""
    from scipy.stats import binomtest

    tests = []
    for first, second in combinations(methods, 2):
        first_wins = sum(1 for w, loser in comparisons if (w, loser) == (first, second))
        second_wins = sum(1 for w, loser in comparisons if (w, loser) == (second, first))
        n = first_wins + second_wins
        p = float(binomtest(first_wins, n, 0.5, alternative="two-sided").pvalue) if n else None
        tests.append(PairTest(first, second, first_wins, second_wins, p))
    return tests
