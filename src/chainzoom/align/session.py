"""An alignment session (``chainzoom align``) and the scorer behind ``chainzoom prompts --score``.

Everything is checked before anything slow starts: the reward spec, the phrase list,
the device, the policy and critic sources (a missing folder or an offline hub id
fails in one line). The run folder holds everything the run needs to resume:

- ``align.json``: the settings; a later run into the same folder must use the same
  ones (only ``--steps`` may grow, to train further);
- ``pairs/``: the training pairs (PNG) and their index;
- ``checkpoints/checkpoint-N``: adapter, optimizer and RNG state (TRL's layout);
- ``log.csv`` and ``rewards.png``: every reward term and the KL per step, and their curves;
- ``critic_cache.jsonl``: critic scores already paid for;
- ``adapter/``: the final adapter (``adapter_config.json`` + ``adapter_model.safetensors``),
  for ``--prompter vlm:MODEL,adapter=RUN/adapter``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, fields
from pathlib import Path

from chainzoom.align.rewards import (
    DEFAULT_PHRASES,
    ImagePair,
    Weighted,
    build_rewards,
    parse_weights,
    read_phrases,
)
from chainzoom.config import AlignConfig
from chainzoom.errors import ChainZoomError
from chainzoom.runtime import Runtime, torch_dtype

SETTINGS_FILE = "align.json"


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr)


def run_align(config: AlignConfig, report: Callable[[str], None] = _to_stderr) -> Path:
    """Build (or reuse) the training pairs and train the adapter; return the adapter's folder."""
    from chainzoom.align.dataset import PairSettings, load_or_build_pairs, pair_images
    from chainzoom.align.log import plot_curves
    from chainzoom.align.trainer import RUNTIME_FIELDS, TrainSettings, train
    from chainzoom.io.images import collect_inputs
    from chainzoom.prompts.vlm import check_source

    out = Path(config.out)
    runtime = config.runtime.resolve()
    weights = parse_weights(config.reward)
    phrases = read_phrases(config.phrases) if config.phrases else list(DEFAULT_PHRASES)
    try:
        check_source(config.policy)
    except ChainZoomError as exc:
        raise ChainZoomError(f"policy: {exc}") from None
    components = make_components(weights, config.critic, phrases, runtime, out / "critic_cache.jsonl")
    images = tuple(str(p) for p in collect_inputs(config.images))
    pair_settings = PairSettings(images, config.backbone_spec, config.scale, config.view, config.centers, runtime.seed)
    settings = TrainSettings(
        **{
            field.name: getattr(config, field.name)
            for field in fields(TrainSettings)
            if field.name not in RUNTIME_FIELDS
        },
        **{name: getattr(runtime, name) for name in RUNTIME_FIELDS},
    )
    record = {
        "train": asdict(settings),
        "pairs": asdict(pair_settings),
        "reward": weights,
        "critic": config.critic if "critic" in weights else None,
        "phrases": phrases if "phrase" in weights else None,
    }
    claim_folder(out, record)
    report(f"align: zooming {len(images)} image(s) for training pairs")
    records = load_or_build_pairs(pair_settings, out / "pairs", runtime, **config.backbone_options())
    report(f"align: {len(records)} pairs; training {settings.steps} steps")
    adapter = train(settings, pair_images(records, out / "pairs"), components, out)
    plot_curves(out / "log.csv", out / "rewards.png", weights)
    return adapter


def make_components(
    weights: dict[str, float], critic: str | None, phrases: Sequence[str], runtime: Runtime, cache: Path | None
) -> list[Weighted]:
    """The weighted reward components; a transformers critic is loaded now, so a bad one fails first."""

    def build_critic():
        from chainzoom.align.critic import CriticReward, ScoreCache, TransformersCritic, create_critic

        assert critic is not None  # the builder is passed on only when a critic is given
        # the critic only scores: in its checkpoint's own dtype on a GPU, float32 on a CPU
        dtype = torch_dtype("float32") if runtime.device == "cpu" else "auto"
        model = create_critic(critic, runtime.device, dtype)
        if isinstance(model, TransformersCritic):
            model.load()
        return CriticReward(model, ScoreCache(cache))

    return build_rewards(weights, critic=build_critic if critic else None, phrases=phrases)


def claim_folder(out: Path, record: dict) -> None:
    """Write the run's settings, or check them against those of the run being resumed."""
    from chainzoom.io.atomic import atomic_write_json

    path = out / SETTINGS_FILE
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        fresh = json.loads(json.dumps(record))
        if _without_steps(saved) != _without_steps(fresh):
            raise ChainZoomError(
                f"{out} holds a run with other settings ({path}); resume it with the same options "
                "(only --steps may change) or choose another --out"
            )
    atomic_write_json(path, record)


def _without_steps(record: dict) -> dict:
    return {**record, "train": {**record["train"], "steps": None}}


def score_prompts_with(
    prompts: Sequence[str],
    reward: str,
    *,
    pairs: Sequence[ImagePair] | None = None,
    critic: str | None = None,
    phrases: str | None = None,
    runtime: Runtime | None = None,
) -> list[dict[str, float]]:
    """Score ``prompts`` with the terms ``reward`` names (``pairs`` needed for the critic)."""
    from chainzoom.align.rewards import score_prompts

    weights = parse_weights(reward)
    if "critic" in weights and pairs is None:
        raise ChainZoomError("the critic term needs the image pair each prompt was written for")
    listed = read_phrases(phrases) if phrases else list(DEFAULT_PHRASES)
    components = make_components(weights, critic, listed, (runtime or Runtime()).resolve(), None)
    return score_prompts(prompts, components, pairs)


def format_scores(prompts: Sequence[str], rows: Sequence[dict[str, float]]) -> str:
    """One line per prompt: every term, the weighted total, then the prompt."""
    lines = []
    for prompt, row in zip(prompts, rows, strict=True):
        terms = "  ".join(f"{name}={value:+.3f}" for name, value in row.items())
        lines.append(f"{terms}  {prompt}")
    return "\n".join(lines)
