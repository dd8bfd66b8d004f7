"""GRPO training of the prompt VLM's LoRA adapter with TRL's GRPOTrainer.

Why TRL and not a loop of our own: TRL 1.16's GRPOTrainer takes a processor as
``processing_class`` and an ``images`` column with *several* images per prompt; it
fills the image placeholders of a conversational prompt in order, so the policy sees
the paper's chat exactly (system message, then [previous state, zoomed view]) in
generation and in the training forward pass (checked in ``tests/align/test_train.py``).
It gives us group-relative advantages, the clipped ratio, the KL to the reference
(the same model with the adapter switched off, so no second copy in memory),
checkpoints with optimizer and RNG state, and exact resumption.

The adapter is the official one's format: PEFT LoRA r=8, alpha=32, dropout 0.05 on
the language model's q/k/v/o and gate/up/down projections (not the vision tower),
saved as ``adapter_config.json`` + ``adapter_model.safetensors``; it loads into the
``vlm`` prompter's ``adapter=`` option.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch

from chainzoom.align.log import StepLog, row_from_trl
from chainzoom.align.rewards import ImagePair, Reward, Weighted
from chainzoom.errors import ChainZoomError, one_line
from chainzoom.prompts.message import MULTISCALE_SYSTEM_MESSAGE
from chainzoom.runtime import torch_dtype

LORA_RANK, LORA_ALPHA, LORA_DROPOUT = 8, 32, 0.05
#: The language model's attention and MLP projections (transformers 5 module names).
LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"


@dataclass(frozen=True)
class TrainSettings:
    """The GRPO run: ``batch_size`` pairs per step, ``group_size`` prompts sampled per pair.

    The fields are :class:`chainzoom.config.AlignConfig`'s of the same names (its defaults
    are the only ones), and the resolved runtime's ``device``, ``dtype`` and ``seed``
    (:data:`RUNTIME_FIELDS`). Their record is the run folder's identity, so the order stays.
    """

    policy: str
    steps: int
    group_size: int
    batch_size: int
    lr: float
    beta: float
    clip: float
    max_new_tokens: int
    temperature: float
    save_every: int
    device: str
    dtype: str
    gradient_checkpointing: bool
    seed: int


#: The settings that come from the resolved runtime rather than from the align config.
RUNTIME_FIELDS = ("device", "dtype", "seed")


def load_vlm(source: str, device: str, dtype: torch.dtype | str, role: str) -> tuple[Any, Any]:
    """A transformers chat VLM and its image-only processor, or a one-line ChainZoomError."""
    from transformers import AutoModelForImageTextToText

    from chainzoom.prompts.vlm_processor import load_processor

    try:
        processor = load_processor(source)
        model = AutoModelForImageTextToText.from_pretrained(source, dtype=dtype, device_map={"": device})
    except OSError as exc:
        raise ChainZoomError(f"{role} {source}: cannot load it ({one_line(exc)})") from None
    except (ValueError, KeyError) as exc:
        raise ChainZoomError(f"{role} {source}: not an image-text-to-text chat model ({one_line(exc)})") from None
    return model, processor


def paper_prompt() -> list[dict]:
    """The official chat with image placeholders that TRL fills from the ``images`` column.

    The system content is a list of parts rather than a string only because the
    dataset library refuses a column that mixes strings and lists; the chat template
    renders both the same.
    """
    return [
        {"role": "system", "content": [{"type": "text", "text": MULTISCALE_SYSTEM_MESSAGE}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "image"}]},
    ]


def completion_text(completion: Any) -> str:
    """The prompt a completion stands for, as the prompter would return it (stripped)."""
    if isinstance(completion, list):
        completion = "".join(
            part.get("content", "") if isinstance(part.get("content"), str) else "" for part in completion
        )
    return str(completion).strip()


def trl_reward(component: Reward) -> Callable[..., list[float | None]]:
    """A TRL reward function for one component; its name becomes ``rewards/<name>`` in the log."""

    def reward(prompts: list, completions: list, images: list, log_metric=None, **_: Any) -> list[float | None]:
        pairs: list[ImagePair] = [(group[0], group[1]) for group in images]
        scores = component.score([completion_text(c) for c in completions], pairs)
        if log_metric is not None:
            for key, value in component.metrics().items():
                log_metric(f"{component.name}_{key}", value)
        # every sample gets a score; the type is TRL's, whose rewards may also be None
        return cast("list[float | None]", scores)

    reward.__name__ = component.name
    return reward


def vision_token_ids(model: Any) -> list[int]:
    """The ids of the image/video placeholder tokens, which a prompt must never contain.

    A sampled ``<|image_pad|>`` makes the training forward pass count one image token
    more than there are image features and stop (seen on a random 3B-size policy at
    step 3); so generation is forbidden to produce any of them.
    """
    names = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id", "image_token_index")
    ids = {getattr(model.config, name, None) for name in names}
    return sorted(i for i in ids if isinstance(i, int))


def lora_config():
    from peft import LoraConfig

    return LoraConfig(
        r=LORA_RANK,
        lora_alpha=LORA_ALPHA,
        lora_dropout=LORA_DROPOUT,
        bias="none",
        target_modules=LORA_TARGETS,
        task_type="CAUSAL_LM",
    )


def grpo_config(settings: TrainSettings, checkpoints: Path):
    from trl import GRPOConfig

    return GRPOConfig(
        output_dir=str(checkpoints),
        max_steps=settings.steps,
        per_device_train_batch_size=settings.batch_size * settings.group_size,
        num_generations=settings.group_size,
        max_completion_length=settings.max_new_tokens,
        temperature=settings.temperature,
        top_k=0,
        learning_rate=settings.lr,
        # Constant: a resumed run with a larger --steps keeps the same learning rate.
        lr_scheduler_type="constant",
        beta=settings.beta,
        epsilon=settings.clip,
        logging_steps=1,
        save_strategy="steps",
        save_steps=settings.save_every,
        save_total_limit=2,
        report_to="none",
        use_cpu=settings.device == "cpu",
        bf16=settings.dtype == "bfloat16",
        fp16=settings.dtype == "float16",
        gradient_checkpointing=settings.gradient_checkpointing,
        seed=settings.seed,
        shuffle_dataset=False,
        # Generation and the training forward must see the same network: with the LoRA
        # dropout on, a sampled token can be near-impossible under the next dropout mask,
        # and the per-token KL estimate exp(ref - logp) blew up to 1e29 in a tiny run.
        # The adapter's config still says dropout 0.05 (the official format); it does
        # nothing at inference.
        disable_dropout=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
    )


def pair_order(pairs: int, steps: int, batch_size: int, seed: int) -> list[int]:
    """Which pair each prompt slot of the run uses: seeded permutations, one per epoch.

    Why not TRL's shuffling: its sampler draws a new permutation each epoch from a
    generator that a resumed run starts afresh, so after an interruption the pairs
    come in another order than in an uninterrupted run. A fixed list, read in order
    (``shuffle_dataset=False``), makes step k use the same pairs however the run got
    there, and a run extended with a larger ``--steps`` keeps its first steps' order.
    """
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []
    while len(order) < steps * batch_size:
        order.extend(torch.randperm(pairs, generator=generator).tolist())
    return order[: steps * batch_size]


def training_dataset(pairs: Sequence[ImagePair], order: Sequence[int]):
    """Rows of (chat, pair index); the images are attached when a row is read.

    Attaching them lazily keeps one copy of each image in memory however many
    times the order repeats it.
    """
    from datasets import Dataset

    def attach(batch: dict[str, list]) -> dict[str, list]:
        return {
            "prompt": [paper_prompt() for _ in batch["pair"]],
            "images": [list(pairs[index]) for index in batch["pair"]],
            "pair": batch["pair"],
        }

    return Dataset.from_dict({"pair": list(order)}).with_transform(attach)


def last_checkpoint(checkpoints: Path) -> tuple[str | None, int]:
    """The newest ``checkpoint-N`` folder and its step (``None, 0`` when there is none)."""
    from transformers.trainer_utils import get_last_checkpoint

    found = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    return found, int(Path(found).name.split("-")[-1]) if found else 0


def make_callback(log: StepLog):
    """A TrainerCallback that writes each step's row and checkpoints the final step."""
    from transformers import TrainerCallback

    class AlignCallback(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "reward" in logs:
                log.append(row_from_trl(state.global_step, logs, log.names, log.extra))

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= state.max_steps:
                control.should_save = True
            return control

    return AlignCallback()


def train(settings: TrainSettings, pairs: Sequence[ImagePair], components: Sequence[Weighted], out: Path) -> Path:
    """Train (or resume training) and write the adapter to ``out/adapter``; returns that folder."""
    from trl import GRPOTrainer

    if settings.group_size < 2:
        raise ChainZoomError("--group-size must be at least 2: GRPO compares prompts within a group")
    model, processor = load_vlm(settings.policy, _home(settings.device), torch_dtype(settings.dtype), role="policy")
    checkpoints = out / "checkpoints"
    resume, done_steps = last_checkpoint(checkpoints)
    extra = [f"{part.reward.name}_{key}" for part in components for key in part.reward.metric_names]
    log = StepLog(out / "log.csv", [part.reward.name for part in components], extra)
    log.truncate(done_steps)
    config = grpo_config(settings, checkpoints)
    config.reward_weights = [part.weight for part in components]
    config.generation_kwargs = {"suppress_tokens": vision_token_ids(model)}
    order = pair_order(len(pairs), settings.steps, settings.batch_size, settings.seed)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[trl_reward(part.reward) for part in components],
        args=config,
        train_dataset=training_dataset(pairs, order),
        processing_class=processor,
        peft_config=lora_config(),
        callbacks=[make_callback(log)],
    )
    trainer.train(resume_from_checkpoint=resume)
    return save_adapter(trainer.model, out / "adapter")


def save_adapter(model: Any, folder: Path) -> Path:
    """Write the PEFT adapter to ``folder`` atomically (a temporary folder, then a rename)."""
    temporary = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    model.save_pretrained(str(temporary), safe_serialization=True)
    shutil.rmtree(folder, ignore_errors=True)
    temporary.rename(folder)
    return folder


def _home(device: str) -> str:
    """Where accelerate will train: the CPU, or the first visible GPU."""
    if device == "cpu":
        return "cpu"
    if device not in ("cuda", "cuda:0"):
        raise ChainZoomError(
            f"--device {device}: training runs on the CPU or the first visible CUDA GPU "
            "(choose that GPU with CUDA_VISIBLE_DEVICES)"
        )
    return "cuda:0"
