"""The Reward seam: named components that score prompts, combined with weights.

The paper aligns its prompt VLM with R = 1.0·critic + 0.5·phrase + 0.5·repetition.
Each term is a :class:`Reward` with a ``name`` and a ``score`` method, so a term can
be trained on, logged on its own (``rewards/<name>`` in the training log) or used
alone to score prompts (:func:`score_prompts`, behind ``chainzoom prompts --score``).

Scales, chosen so the weights mean what they say:

- ``critic``: the critic VLM's rating mapped to [0, 1] (0 when its answer has no
  usable score);
- ``phrase``: 0 for a clean prompt, -1 when it contains a viewpoint/template phrase
  ("first image", "the image shows", ...): these describe the question, not the
  picture, and steer the SR backbone towards nothing;
- ``repetition``: 0 without repeats, down to -1 for a prompt made of one repeated
  word or phrase ("fur texture orange fur texture ..."), the failure the paper names.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from chainzoom.core.vocabulary import PAPER_REWARD_WEIGHTS
from chainzoom.errors import ChainZoomError

#: One training or scoring example's images: (previous state, zoomed view).
ImagePair = tuple[Image.Image, Image.Image]

#: Viewpoint and template phrases: the paper names "first image" and "second image".
DEFAULT_PHRASES = (
    "first image",
    "second image",
    "the image shows",
    "the image",
    "this image",
    "the picture",
    "the photo",
    "zoom-in",
    "zoomed-in",
    "zoomed in",
    "close-up of the",
)

#: The paper's weights (section 9 of the reference notes).
PAPER_WEIGHTS = PAPER_REWARD_WEIGHTS

#: Words that may repeat in a fluent description without being a repeated concept.
_FUNCTION_WORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "on",
        "in",
        "at",
        "to",
        "and",
        "or",
        "with",
        "by",
        "for",
        "from",
        "its",
        "it",
        "is",
        "are",
        "as",
        "into",
        "over",
        "under",
    ]
)
_WORD = re.compile(r"[^\W_]+(?:['-][^\W_]+)*", re.UNICODE)


class Reward(ABC):
    """Scores each prompt; higher is better. ``pairs`` holds the images each prompt is about."""

    name: str = "reward"
    #: Extra numbers about the last :meth:`score` call, logged per step as ``<name>_<metric>``.
    metric_names: tuple[str, ...] = ()

    @abstractmethod
    def score(self, prompts: Sequence[str], pairs: Sequence[ImagePair] | None = None) -> list[float]:
        """One score per prompt."""

    def metrics(self) -> dict[str, float]:
        """The values of :attr:`metric_names` for the last :meth:`score` call."""
        return {}


class PhraseReward(Reward):
    """-1 when a prompt contains any listed phrase (case-insensitive, whole words), else 0."""

    name = "phrase"

    def __init__(self, phrases: Sequence[str] = DEFAULT_PHRASES) -> None:
        cleaned = [" ".join(p.lower().split()) for p in phrases if p.strip()]
        if not cleaned:
            raise ChainZoomError("phrase reward: the phrase list is empty")
        self.phrases = tuple(cleaned)
        alternatives = "|".join(re.escape(p).replace(r"\ ", r"\s+") for p in sorted(cleaned, key=len, reverse=True))
        self._pattern = re.compile(rf"(?<![^\W_])(?:{alternatives})(?![^\W_])", re.IGNORECASE)

    def found(self, prompt: str) -> list[str]:
        """The listed phrases that occur in ``prompt`` (for reports and tests)."""
        return [" ".join(m.group(0).lower().split()) for m in self._pattern.finditer(prompt)]

    def score(self, prompts: Sequence[str], pairs: Sequence[ImagePair] | None = None) -> list[float]:
        return [-1.0 if self._pattern.search(p) else 0.0 for p in prompts]


class RepetitionReward(Reward):
    """Minus the share of repeated n-grams (n = 1..``max_n``), the worst n counting.

    For each n the share is ``1 - distinct/total`` over the prompt's word n-grams;
    function words ("a", "of", "the"...) are skipped for n = 1, since "a cat on a
    sofa" repeats no concept. A prompt that is one word said k times scores
    ``-(1 - 1/k)``; a prompt without repeats scores 0.
    """

    name = "repetition"

    def __init__(self, max_n: int = 3) -> None:
        if max_n < 1:
            raise ChainZoomError(f"repetition reward: max_n must be at least 1, got {max_n}")
        self.max_n = max_n

    def repeated_share(self, prompt: str) -> float:
        words = [w.lower() for w in _WORD.findall(prompt)]
        worst = 0.0
        for n in range(1, self.max_n + 1):
            units = [w for w in words if w not in _FUNCTION_WORDS] if n == 1 else words
            grams = [tuple(units[i : i + n]) for i in range(len(units) - n + 1)]
            if len(grams) > 1:
                worst = max(worst, 1.0 - len(set(grams)) / len(grams))
        return worst

    def score(self, prompts: Sequence[str], pairs: Sequence[ImagePair] | None = None) -> list[float]:
        return [0.0 - self.repeated_share(p) for p in prompts]  # 0.0, not -0.0, for a clean prompt


@dataclass(frozen=True)
class Weighted:
    """A reward component and its weight in the total."""

    reward: Reward
    weight: float


def parse_weights(spec: str) -> dict[str, float]:
    """``"critic=1.0,phrase=0.5"`` -> ``{"critic": 1.0, "phrase": 0.5}``; names must be known."""
    weights: dict[str, float] = {}
    for item in spec.split(","):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        name = name.strip()
        if name not in REWARD_NAMES:
            raise ChainZoomError(f"--reward: unknown reward {name!r} (known: {', '.join(REWARD_NAMES)})")
        if name in weights:
            raise ChainZoomError(f"--reward: {name} is given twice")
        try:
            weights[name] = float(value) if sep else 1.0
        except ValueError:
            raise ChainZoomError(f"--reward: the weight of {name} must be a number, got {value!r}") from None
    if not any(w != 0 for w in weights.values()):
        raise ChainZoomError(f"--reward: no reward with a nonzero weight in {spec!r} (e.g. {PAPER_WEIGHTS})")
    return {name: w for name, w in weights.items() if w != 0}


#: The components ``--reward`` may name.
REWARD_NAMES = ("critic", "phrase", "repetition")


def build_rewards(
    weights: dict[str, float],
    *,
    critic: Callable[[], Reward] | None = None,
    phrases: Sequence[str] = DEFAULT_PHRASES,
) -> list[Weighted]:
    """The weighted components, in ``REWARD_NAMES`` order; ``critic`` is built only if weighted."""
    built: list[Weighted] = []
    for name in REWARD_NAMES:
        if name not in weights:
            continue
        if name == "critic":
            if critic is None:
                raise ChainZoomError("the critic reward needs a critic model: --critic PATH|ID|openai:URL")
            reward: Reward = critic()
        elif name == "phrase":
            reward = PhraseReward(phrases)
        else:
            reward = RepetitionReward()
        built.append(Weighted(reward, weights[name]))
    return built


def read_phrases(path: str | Path) -> list[str]:
    """One phrase per line; blank lines and lines starting with ``#`` are skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ChainZoomError(f"--phrases {path}: cannot read it ({exc.strerror})") from None
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def score_prompts(
    prompts: Sequence[str], components: Sequence[Weighted], pairs: Sequence[ImagePair] | None = None
) -> list[dict[str, float]]:
    """Each prompt's score from every component, plus their weighted ``total``."""
    if pairs is not None and len(pairs) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(pairs)} image pairs")
    rows: list[dict[str, float]] = [{} for _ in prompts]
    for part in components:
        for row, value in zip(rows, part.reward.score(prompts, pairs), strict=True):
            row[part.reward.name] = value
    for row in rows:
        row["total"] = sum(part.weight * row[part.reward.name] for part in components)
    return rows
