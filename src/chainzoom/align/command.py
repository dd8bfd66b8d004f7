"""``chainzoom align`` and the scorer behind ``chainzoom prompts --score``.

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

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from chainzoom.align.rewards import (
    DEFAULT_PHRASES,
    PAPER_WEIGHTS,
    ImagePair,
    Weighted,
    build_rewards,
    parse_weights,
    read_phrases,
)
from chainzoom.errors import ChainZoomError
from chainzoom.registry import Runtime

DEFAULT_POLICY = "Qwen/Qwen2.5-VL-3B-Instruct"
SETTINGS_FILE = "align.json"


def add_align_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``align`` to the CLI's subcommands; its handler is :func:`run_align`."""
    align = commands.add_parser(
        "align",
        help="align the prompt VLM with GRPO (LoRA adapter)",
        description="Train a LoRA adapter on the prompt VLM with GRPO against a critic VLM and text rewards.",
    )
    align.add_argument("--images", nargs="+", required=True, metavar="PATH", help="training images or folders")
    align.add_argument(
        "--policy", default=DEFAULT_POLICY, help=f"prompt VLM: folder or hub id (default {DEFAULT_POLICY})"
    )
    align.add_argument("--critic", default=None, help="critic VLM: folder, hub id or openai:URL,model=NAME")
    align.add_argument("--out", type=Path, default=Path("runs/align"), help="run folder (default runs/align)")
    align.add_argument(
        "--reward",
        default=PAPER_WEIGHTS,
        help=f"weighted reward terms: critic, phrase, repetition (default {PAPER_WEIGHTS})",
    )
    align.add_argument("--phrases", default=None, help="file of phrases the phrase reward penalises, one per line")
    grpo = align.add_argument_group("GRPO")
    grpo.add_argument("--steps", type=int, default=200, help="optimizer steps (default 200)")
    grpo.add_argument("--group-size", type=int, default=4, help="prompts sampled per pair and compared (default 4)")
    grpo.add_argument("--batch-size", type=int, default=2, help="pairs per step (default 2)")
    grpo.add_argument("--lr", type=float, default=5e-5, help="learning rate, constant (default 5e-5)")
    grpo.add_argument("--beta", type=float, default=0.04, help="KL weight to the base model (default 0.04; 0 = none)")
    grpo.add_argument("--clip", type=float, default=0.2, help="PPO ratio clip epsilon (default 0.2)")
    grpo.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1.0)")
    grpo.add_argument("--max-new-tokens", type=int, default=32, help="prompt length in tokens (default 32, official)")
    grpo.add_argument("--save-every", type=int, default=50, help="checkpoint every N steps (default 50)")
    data = align.add_argument_group("training pairs (zoom chains on --images)")
    data.add_argument("--backbone", default="realesrgan", help="backbone of the chain (bicubic: fastest)")
    data.add_argument("--scale", type=float, default=256.0, help="zoom depth per chain (default 256: four pairs)")
    data.add_argument("--view", type=int, default=None, help="state size, long side (default: as chainzoom zoom)")
    data.add_argument(
        "--centers", type=int, default=1, help="zoom centres per image: the centre, then random (default 1)"
    )
    run = align.add_argument_group("runtime")
    run.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    run.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"), help="model precision")
    run.add_argument("--gradient-checkpointing", action="store_true", help="less memory, about a third slower")
    run.add_argument("--seed", type=int, default=0, help="seed for pairs, sampling and training (default 0)")
    align.set_defaults(handler=run_align)
    return align


def run_align(args: argparse.Namespace) -> int:
    from chainzoom.align.dataset import PairSettings, load_or_build_pairs, pair_images
    from chainzoom.align.log import plot_curves
    from chainzoom.align.trainer import TrainSettings, train
    from chainzoom.io.images import collect_inputs
    from chainzoom.prompts.vlm import check_source
    from chainzoom.runtime import resolve_runtime

    _check_positive(args)
    runtime = resolve_runtime(args.device, args.dtype, None, args.seed)
    weights = parse_weights(args.reward)
    phrases = read_phrases(args.phrases) if args.phrases else list(DEFAULT_PHRASES)
    try:
        check_source(args.policy)
    except ChainZoomError as exc:
        raise ChainZoomError(f"policy: {exc}") from None
    components = make_components(weights, args.critic, phrases, runtime, args.out / "critic_cache.jsonl")
    images = tuple(str(p) for p in collect_inputs(args.images))
    pair_settings = PairSettings(images, args.backbone, args.scale, args.view, args.centers, args.seed)
    settings = TrainSettings(
        policy=args.policy,
        steps=args.steps,
        group_size=args.group_size,
        batch_size=args.batch_size,
        lr=args.lr,
        beta=args.beta,
        clip=args.clip,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        save_every=args.save_every,
        device=runtime.device,
        dtype=args.dtype,
        gradient_checkpointing=args.gradient_checkpointing,
        seed=args.seed,
    )
    record = {
        "train": asdict(settings),
        "pairs": asdict(pair_settings),
        "reward": weights,
        "critic": args.critic if "critic" in weights else None,
        "phrases": phrases if "phrase" in weights else None,
    }
    claim_folder(args.out, record)
    print(f"align: zooming {len(images)} image(s) for training pairs", file=sys.stderr)
    records = load_or_build_pairs(pair_settings, args.out / "pairs", runtime)
    print(f"align: {len(records)} pairs; training {settings.steps} steps", file=sys.stderr)
    adapter = train(settings, pair_images(records, args.out / "pairs"), components, args.out)
    plot_curves(args.out / "log.csv", args.out / "rewards.png", weights)
    print(f"adapter: {adapter}\nlog: {args.out / 'log.csv'}\ncurves: {args.out / 'rewards.png'}")
    return 0


def _check_positive(args: argparse.Namespace) -> None:
    for flag in ("steps", "group_size", "batch_size", "max_new_tokens", "save_every"):
        if getattr(args, flag) < 1:
            raise ChainZoomError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    if args.group_size < 2:
        raise ChainZoomError("--group-size must be at least 2: GRPO compares prompts within a group")
    if args.lr <= 0 or args.beta < 0 or args.clip <= 0 or args.temperature <= 0:
        raise ChainZoomError("--lr, --clip and --temperature must be positive and --beta not negative")


def make_components(
    weights: dict[str, float], critic: str | None, phrases: Sequence[str], runtime: Runtime, cache: Path | None
) -> list[Weighted]:
    """The weighted reward components; a transformers critic is loaded now, so a bad one fails first."""

    def build_critic():
        from chainzoom.align.critic import CriticReward, ScoreCache, TransformersCritic, create_critic
        from chainzoom.align.trainer import DTYPES

        model = create_critic(critic, runtime.device, DTYPES[runtime.dtype])
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


def add_score_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``chainzoom prompts ... --score`` (for the CLI's ``prompts`` command)."""
    group = parser.add_argument_group("scoring (the alignment rewards)")
    group.add_argument("--score", action="store_true", help="score each prompt with the alignment rewards")
    group.add_argument("--reward", default="phrase=0.5,repetition=0.5", help="terms and weights to score with")
    group.add_argument("--critic", default=None, help="critic VLM for the critic term: folder, hub id or openai:URL")
    group.add_argument("--phrases", default=None, help="file of phrases the phrase reward penalises")


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
    components = make_components(weights, critic, listed, runtime or Runtime(), None)
    return score_prompts(prompts, components, pairs)


def format_scores(prompts: Sequence[str], rows: Sequence[dict[str, float]]) -> str:
    """One line per prompt: every term, the weighted total, then the prompt."""
    lines = []
    for prompt, row in zip(prompts, rows, strict=True):
        terms = "  ".join(f"{name}={value:+.3f}" for name, value in row.items())
        lines.append(f"{terms}  {prompt}")
    return "\n".join(lines)
