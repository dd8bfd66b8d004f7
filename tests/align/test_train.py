"""GRPO alignment end to end on tiny random Qwen2.5-VL policy and critic models.

Both models are built from configs with a locally trained tokenizer
(:mod:`tests.tiny_vlm`), saved, and loaded through the real code. A uniformly random
policy writes byte soup that no text reward can tell apart (all zeros, so GRPO has
no gradient), so the policy here is given the paper's failure first: the input
embedding of the word " sky" is scaled up, which makes the model repeat it once it
has said it ("sky sky sky sky"). The repetition reward then has something to fix.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from chainzoom.cli import build_parser
from chainzoom.errors import ChainZoomError
from tests.tiny_vlm import build_tiny_qwen25vl

REPEATED_WORD = " sky"
COMMON = ["--backbone", "bicubic", "--scale", "16", "--group-size", "4", "--device", "cpu", "--seed", "0"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and on a shared 2-core machine threads
    that wait for each other made these tests five times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_repetitive(folder: Path, word: str = REPEATED_WORD, factor: float = 8.0) -> Path:
    """Scale ``word``'s embedding row so the tiny policy tends to repeat that word."""
    from transformers import AutoTokenizer

    (token,) = AutoTokenizer.from_pretrained(folder)(word, add_special_tokens=False).input_ids
    weights_file = folder / "model.safetensors"
    weights = load_file(weights_file)
    (name,) = [key for key in weights if key.endswith("embed_tokens.weight")]
    weights[name][token] *= factor
    save_file(weights, weights_file, metadata={"format": "pt"})
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("align")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for index in range(2):
        pixels = (rng.random((64, 64, 3)) * 255).astype("uint8")
        Image.fromarray(pixels).save(images / f"{index}.png")
    return {
        "policy": make_repetitive(build_tiny_qwen25vl(root / "policy", seed=0)),
        "critic": build_tiny_qwen25vl(root / "critic", seed=1),
        "images": images,
    }


def align(*argv: str) -> int:
    args = build_parser().parse_args(["align", *argv])
    return args.handler(args)


def log_rows(out: Path) -> list[dict[str, str]]:
    with (out / "log.csv").open(newline="") as stream:
        return list(csv.DictReader(stream))


def context(seed: int):
    from chainzoom.prompts.base import PromptContext

    generator = torch.Generator().manual_seed(seed)
    return PromptContext(1, torch.rand(3, 56, 56, generator=generator), torch.rand(3, 56, 56, generator=generator))


def test_trl_shows_the_policy_the_prompters_chat(models):
    """The dataset's prompt renders to exactly the prompter's chat, images filled in order."""
    from trl.data_utils import prepare_multimodal_messages

    from chainzoom.align.trainer import paper_prompt
    from chainzoom.prompts.vlm import paper_messages
    from chainzoom.prompts.vlm_processor import load_processor

    processor = load_processor(str(models["policy"]))
    wide, view = Image.new("RGB", (4, 4), "red"), Image.new("RGB", (4, 4), "blue")
    filled = prepare_multimodal_messages(paper_prompt(), images=[wide, view])
    assert [part.get("image") for part in filled[1]["content"]] == [wide, view]

    def render(messages):
        return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    assert render(filled) == render(paper_messages())


def run_args(models: dict[str, Path], out: Path, steps: int) -> list[str]:
    """A run with all three rewards; the high learning rate makes two steps visible."""
    return [
        "--images",
        str(models["images"]),
        "--policy",
        str(models["policy"]),
        "--critic",
        str(models["critic"]),
        "--out",
        str(out),
        "--steps",
        str(steps),
        "--lr",
        "0.05",
        "--save-every",
        "1",
        "--batch-size",
        "2",
        "--max-new-tokens",
        "12",
        *COMMON,
    ]


@pytest.fixture(scope="module")
def two_steps(models, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("two-steps") / "run"
    assert align(*run_args(models, out, 2)) == 0
    return out


def test_generation_may_not_write_image_placeholders(models):
    """A sampled <|image_pad|> breaks the training forward pass; the trainer forbids all four."""
    from transformers import AutoConfig, AutoTokenizer

    from chainzoom.align.trainer import vision_token_ids

    class Model:
        config = AutoConfig.from_pretrained(models["policy"])

    tokenizer = AutoTokenizer.from_pretrained(models["policy"])
    names = ["<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"]
    assert vision_token_ids(Model()) == sorted(tokenizer.convert_tokens_to_ids(names))


def test_two_steps_train_the_adapter_and_it_changes_the_prompter(models, two_steps):
    from chainzoom.prompts import create_prompter
    from chainzoom.runtime import Runtime

    out = two_steps
    rows = log_rows(out)
    assert [row["step"] for row in rows] == ["1", "2"]
    for row in rows:
        for column in ("reward", "critic", "phrase", "repetition", "kl", "loss", "critic_unusable"):
            float(row[column])  # every term is logged, as a number
    assert float(rows[0]["repetition"]) < 0  # the repetitive policy is penalised
    assert (out / "rewards.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors").is_file()
    assert len(list((out / "pairs").glob("*_view.png"))) == 4  # 2 images x 2 steps of x4 to x16

    adapter = out / "adapter"
    lora = load_file(adapter / "adapter_model.safetensors")
    b_weights = [tensor for key, tensor in lora.items() if "lora_B" in key]
    assert b_weights and any(tensor.abs().max() > 0 for tensor in b_weights)  # B starts at zero: it moved
    assert all("visual" not in key and "language_model" in key for key in lora)

    runtime = Runtime(device="cpu")
    base = create_prompter(f"vlm:{models['policy']}", runtime, max_tokens=12)
    aligned = create_prompter(f"vlm:{models['policy']}", runtime, max_tokens=12, adapter=str(adapter))
    contexts = [context(seed) for seed in range(3)]
    assert [base.describe(c) for c in contexts] != [aligned.describe(c) for c in contexts]


def test_resume_continues_exactly_and_refuses_other_settings(models, two_steps, tmp_path):
    """Interrupted after step 1 and started again: step 2 is what the uninterrupted run made."""
    resumed = tmp_path / "resumed"
    align(*run_args(models, resumed, 1))
    align(*run_args(models, resumed, 2))
    a, b = log_rows(two_steps), log_rows(resumed)
    assert [row["step"] for row in b] == ["1", "2"]
    columns = ("reward", "critic", "phrase", "repetition", "kl", "loss", "critic_unusable")
    assert [[row[c] for c in columns] for row in a] == [[row[c] for c in columns] for row in b]
    with pytest.raises(ChainZoomError, match="other settings"):
        align(*run_args(models, resumed, 2), "--beta", "0.1")


def test_unloadable_policy_or_critic_is_one_clear_error(models, tmp_path):
    base = ["--images", str(models["images"]), "--out", str(tmp_path / "run"), *COMMON]
    with pytest.raises(ChainZoomError, match=r"^policy: vlm .*no such model folder"):
        align(*base, "--policy", str(tmp_path / "missing"), "--reward", "phrase=1")
    with pytest.raises(ChainZoomError, match=r"^critic: vlm .*no such model folder"):
        align(*base, "--policy", str(models["policy"]), "--critic", str(tmp_path / "missing"))
    with pytest.raises(ChainZoomError, match="needs a critic model"):
        align(*base, "--policy", str(models["policy"]))
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copyfile(models["critic"] / "config.json", broken / "config.json")
    with pytest.raises(ChainZoomError, match=r"^critic .*broken: cannot load it"):
        align(*base, "--policy", str(models["policy"]), "--critic", str(broken))


@pytest.mark.slow
def test_phrase_and_repetition_rewards_rise_with_training(models, tmp_path):
    """The learning test: 24 seeded steps lift the mean reward of the repetitive policy.

    Seeds 0, 1 and 2 all gain more than 0.2 here (seed 0 about 0.35); the bound leaves
    room for another platform's floating point to change the samples.
    """
    out = tmp_path / "learn"
    align(
        "--images",
        str(models["images"]),
        "--policy",
        str(models["policy"]),
        "--out",
        str(out),
        "--reward",
        "phrase=0.5,repetition=0.5",
        "--steps",
        "24",
        "--batch-size",
        "2",
        "--max-new-tokens",
        "12",
        "--lr",
        "0.005",
        "--save-every",
        "100",
        *COMMON,
    )
    rewards = [float(row["reward"]) for row in log_rows(out)]
    untrained, trained = rewards[0], np.mean(rewards[-8:])  # step 1 samples the policy before any update
    assert untrained < -0.25  # 0.5 x a repeated-word share of a half or more
    assert trained > untrained + 0.15
