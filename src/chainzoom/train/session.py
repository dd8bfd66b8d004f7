"""A training run (``chainzoom train-backbone``): its folder, the loop, resume, the log and the curves.

The run folder holds:

- ``train.json``: the settings; ``--resume`` must find the same ones (only ``--steps``,
  ``--checkpoint-every``, ``--preview`` and ``--quiet`` may change);
- ``checkpoints/model_<step>.pkl`` and ``checkpoints/vae_encoder_<step>.pt``: the
  official files, for ``--backbone osediff-sd3:SD3_DIR,lora=...,vae=...`` (``--variant
  sd21``: ``checkpoints/osediff_<step>.pkl``, for ``osediff-sd21:SD21_DIR,ckpt=...``);
- ``resume.pt``: the latest checkpoint's full state (every LoRA in float32, both
  optimizers); with the per-step seeding of :mod:`chainzoom.train.data` it is all a
  resumed run needs to repeat exactly the steps an uninterrupted run would take;
- ``losses.csv``: every loss term of every step; ``losses.png``: their curves;
- ``preview/``: with ``--preview N``, sample pairs (and what was drawn for each).

Every file is written atomically.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from chainzoom.config import to_dict
from chainzoom.errors import OptionError
from chainzoom.io.atomic import atomic_write, atomic_write_json
from chainzoom.runtime import Runtime, torch_dtype
from chainzoom.train.config import VARIANTS, TrainBackboneConfig
from chainzoom.train.data import ImageSet, step_rng, write_preview
from chainzoom.train.degradations import RealESRGANSettings

SETTINGS_FILE = "train.json"
STATE_FILE = "resume.pt"
LOG_FILE = "losses.csv"
PLOT_FILE = "losses.png"
COLUMNS = ("step", "degradation", "total", "mse", "lpips", "vsd", "reg", "seconds")
#: Settings a resumed run may change: they do not change what a step computes.
MAY_CHANGE = ("steps", "checkpoint_every", "preview", "resume", "quiet", "out")


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr)


def checkpoint_paths(out: Path, step: int) -> tuple[Path, Path]:
    """The official pair of files for ``step``: transformer LoRA list and VAE encoder."""
    return out / "checkpoints" / f"model_{step}.pkl", out / "checkpoints" / f"vae_encoder_{step}.pt"


def run_train_backbone(config: TrainBackboneConfig, report: Callable[[str], None] = _to_stderr) -> Path:
    """Train (or resume, or only preview); return the run folder."""
    from chainzoom.backbones.diffusion.common import require_diffusion_packages, resolve_base

    out = Path(config.out)
    runtime = config.runtime.resolve()
    if runtime.device == "cpu" and runtime.dtype not in ("auto", "float32"):
        raise OptionError("dtype", f"{runtime.dtype} is for GPUs; training on the CPU runs float32 (auto)")
    images = ImageSet(config.images, config.crop, config.captions)
    settings = RealESRGANSettings()
    if config.preview:
        folder = write_preview(images, out, config.preview, runtime.seed, config.degradation_at(1), settings)
        report(f"preview: {config.preview} pairs in {folder}")
        return out
    assert config.base is not None  # checked by the config
    require_diffusion_packages("train-backbone")
    base = resolve_base(config.base, VARIANTS[config.variant], "train-backbone")
    lpips = _lpips(config)
    start = _check_folder(out, config)
    trainer = make_trainer(config, base, runtime, lpips)  # a model that fails to load leaves no run behind
    if not config.resume:
        atomic_write_json(out / SETTINGS_FILE, _identity(config))
    log = out / LOG_FILE
    if start:
        state = torch.load(out / STATE_FILE, map_location="cpu", weights_only=True)
        trainer.load_trainable_state(state["lora"])
        trainer.load_optimizer_state(state["optimizer"])
        report(f"resuming after step {start}")
    _truncate_log(log, start)
    if config.captions == "none":
        trainer.condition([""])
        trainer.release_text_encoders()

    for step in range(start + 1, config.steps + 1):
        began = time.perf_counter()
        rng = step_rng(runtime.seed, step)
        degradation = config.degradation_at(step)
        samples = [
            images.sample(i, degradation, rng, settings) for i in images.indices(runtime.seed, step, config.batch)
        ]
        losses = trainer.step(
            torch.stack([s.hr for s in samples]),
            torch.stack([s.lr_up for s in samples]),
            [s.caption for s in samples],
            rng,
        )
        row = {"step": step, "degradation": degradation, **dataclasses.asdict(losses)}
        row["seconds"] = round(time.perf_counter() - began, 3)
        _append(log, row)
        if not config.quiet:
            terms = " ".join(f"{k}={v:.4f}" for k, v in dataclasses.asdict(losses).items() if v is not None)
            report(f"step {step}/{config.steps} {terms} ({row['seconds']:.1f}s)")
        if step % config.checkpoint_every == 0 or step == config.steps:
            save_checkpoint(out, trainer, step)
            _plot(log, out / PLOT_FILE, config.weights, report)
    report(f"backbone: {backbone_spec(config, config.steps)}")
    return out


def make_trainer(config: TrainBackboneConfig, base: str, runtime: Runtime, lpips: Any) -> Any:
    """The variant's trainer, its models loaded and its LoRAs initialised from the seed."""
    common: dict[str, Any] = {
        "rank": config.lora_rank,
        "lr": config.lr,
        "device": torch.device(runtime.device),
        "dtype": torch_dtype(runtime.dtype),
        "seed": runtime.seed,
        "lpips": lpips,
        "gradient_checkpointing": config.gradient_checkpointing,
    }
    if config.variant == "sd21":
        from chainzoom.train.osediff_sd21 import OSEDiffSD21Trainer

        return OSEDiffSD21Trainer(base, config.weights, **common)
    from chainzoom.train.osediff import OSEDiffSD3Trainer

    return OSEDiffSD3Trainer.from_folder(base, config.weights, subtract_shift=config.subtract_shift, **common)


def backbone_spec(config: TrainBackboneConfig, step: int) -> str:
    """The ``--backbone`` spec that zooms with the files of ``step``."""
    out = Path(config.out)
    if config.variant == "sd21":
        return f"osediff-sd21:{config.base},ckpt={out / 'checkpoints' / f'osediff_{step}.pkl'}"
    lora, vae = checkpoint_paths(out, step)
    return f"osediff-sd3:{config.base},lora={lora},vae={vae}"


def _lpips(config: TrainBackboneConfig) -> Any:
    if config.weights["lpips"] == 0:
        return None
    from chainzoom.train.lpips import load_lpips

    return load_lpips(config.vgg, config.lpips_heads)


def _identity(config: TrainBackboneConfig) -> dict[str, Any]:
    """The settings that decide what each step computes (CPU threads do not)."""
    data = {k: v for k, v in to_dict(config).items() if k not in MAY_CHANGE}
    data["runtime"] = {k: v for k, v in data["runtime"].items() if k != "threads"}
    if config.schedule == "coarse-to-fine":  # its switch point is a share of --steps
        data["steps"] = config.steps
    return data


def _check_folder(out: Path, config: TrainBackboneConfig) -> int:
    """A new run needs an unused folder, a resumed one the same settings; the step to resume after."""
    settings = out / SETTINGS_FILE
    identity = _identity(config)
    if not config.resume:
        if settings.exists():
            raise OptionError("out", f"{out} already holds a training run: pass --resume, or choose another --out")
        return 0
    if not settings.is_file():
        raise OptionError("resume", f"{out} holds no training run ({SETTINGS_FILE} is missing)")
    saved = json.loads(settings.read_text(encoding="utf-8"))
    changed = sorted(k for k in set(saved) | set(identity) if saved.get(k) != identity.get(k))
    if changed:
        raise OptionError("resume", f"the run in {out} used other settings for: {', '.join(changed)}")
    if not (out / STATE_FILE).is_file():
        return 0  # interrupted before its first checkpoint: it starts again from step 1
    step = int(torch.load(out / STATE_FILE, map_location="cpu", weights_only=True)["step"])
    if step >= config.steps:
        raise OptionError("steps", f"the run in {out} has already done {step} steps: ask for more to continue")
    return step


def save_checkpoint(out: Path, trainer: Any, step: int) -> None:
    """The official file(s) of ``step``, then the resume state (so a state never names missing files)."""
    for name, obj in trainer.official_files(step).items():
        _save_torch(out / name, obj)
    state = {"step": step, "lora": trainer.trainable_state(), "optimizer": trainer.optimizer_state()}
    _save_torch(out / STATE_FILE, state)


def _save_torch(path: Path, obj: Any) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def read_log(log: Path) -> list[dict[str, str]]:
    if not log.is_file():
        return []
    with log.open(newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def _truncate_log(log: Path, last_step: int) -> None:
    """Keep the rows up to ``last_step``: the steps after it run again."""
    kept = [row for row in read_log(log) if int(row["step"]) <= last_step]

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="", encoding="utf-8") as stream:
            writer = csv.DictWriter(stream, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(kept)

    atomic_write(log, write)


def _append(log: Path, row: dict[str, Any]) -> None:
    with log.open("a", newline="", encoding="utf-8") as stream:
        csv.DictWriter(stream, fieldnames=COLUMNS).writerow({k: "" if v is None else v for k, v in row.items()})


def _plot(log: Path, png: Path, weights: dict[str, float], report: Callable[[str], None]) -> None:
    """Each weighted term and the regulariser's loss per step (matplotlib, the ``eval`` extra)."""
    if importlib.util.find_spec("matplotlib") is None:
        report(f"{png.name} not drawn: matplotlib is missing (pip install 'chainzoom[eval]')")
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_log(log)
    steps = [int(row["step"]) for row in rows]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True, height_ratios=(3, 1.3))
    top.plot(steps, [float(r["total"]) for r in rows], color="black", linewidth=2, label="total (weighted)")
    for name, weight in weights.items():
        values = [float(r[name]) * weight for r in rows if r[name] != ""]
        if values and weight > 0:
            top.plot(steps[: len(values)], values, linewidth=1.2, label=f"{weight:g}·{name}")
    top.set_ylabel("loss")
    top.set_yscale("log")
    top.legend(loc="best", fontsize=8)
    top.grid(alpha=0.3)
    top.set_title("OSEDiff-SD3 training")
    reg = [float(r["reg"]) for r in rows if r["reg"] != ""]
    if reg:
        bottom.plot(steps[: len(reg)], reg, color="tab:red", linewidth=1.2)
    bottom.set_ylabel("regulariser loss")
    bottom.set_xlabel("step")
    bottom.grid(alpha=0.3)
    figure.tight_layout()
    atomic_write(png, lambda tmp: figure.savefig(tmp, dpi=110))
    plt.close(figure)
