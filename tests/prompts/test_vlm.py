"""The ``vlm`` prompter on a tiny random Qwen2.5-VL saved to disk and loaded through ``vlm:PATH``."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")

from chainzoom.errors import ChainZoomError
from chainzoom.io.images import to_pil
from chainzoom.prompts import create_prompter
from chainzoom.prompts.base import PromptContext
from chainzoom.prompts.message import (
    MULTISCALE_SYSTEM_MESSAGE,
    step_seed,
)
from chainzoom.prompts.vlm_processor import image_only, load_processor
from chainzoom.runtime import Runtime

from ..tiny_vlm import build_tiny_qwen25vl, save_lora_adapter

OFFICIAL_CHAT = (
    f"<|im_start|>system\n{MULTISCALE_SYSTEM_MESSAGE}<|im_end|>\n"
    "<|im_start|>user\n"
    "<|vision_start|><|image_pad|><|vision_end|><|vision_start|><|image_pad|><|vision_end|><|im_end|>\n"
    "<|im_start|>assistant\n"
)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_tiny_qwen25vl(tmp_path_factory.mktemp("tiny-qwen25vl"))


def make_context(size: int = 512, step: int = 1) -> PromptContext:
    """Two clearly different images, so their order can be told apart."""
    generator = torch.Generator().manual_seed(step)
    wide = torch.rand(3, size, size, generator=generator) * 0.5
    view = 0.5 + torch.rand(3, size, size, generator=generator) * 0.5
    return PromptContext(step, wide, view)


def test_processor_loads_without_its_video_processor_and_saves(tiny_model, tmp_path):
    from transformers import Qwen2_5_VLProcessor

    processor = load_processor(str(tiny_model))
    assert isinstance(processor, Qwen2_5_VLProcessor)
    assert type(processor).__name__ == "Qwen2_5_VLProcessor"
    assert type(processor.image_processor).__name__ == "Qwen2VLImageProcessorPil"
    assert not hasattr(processor, "video_processor")

    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["processor_class"] == "Qwen2_5_VLProcessor"  # loadable by AutoProcessor elsewhere
    again = image_only(Qwen2_5_VLProcessor).from_pretrained(tmp_path)
    assert again.chat_template == processor.chat_template
    assert again.tokenizer.get_vocab() == processor.tokenizer.get_vocab()


def test_message_holds_both_images_in_paper_order_at_view_size(tiny_model, monkeypatch):
    prompter = create_prompter(f"vlm:{tiny_model}", Runtime(device="cpu"), max_tokens=4)
    _, processor = prompter.load()
    seen = {}
    original = type(processor).__call__

    def spy(self, *args, **kwargs):
        seen.update(kwargs)
        seen["result"] = original(self, *args, **kwargs)
        return seen["result"]

    monkeypatch.setattr(type(processor), "__call__", spy)
    context = make_context(512)
    prompter.describe(context)

    assert seen["text"] == [OFFICIAL_CHAT]
    first, second = seen["images"]
    assert first.size == second.size == (512, 512)
    assert first.tobytes() == to_pil(context.wide).tobytes()
    assert second.tobytes() == to_pil(context.view).tobytes()
    # The processor's smart resize makes each 512x512 image 504x504: 36x36 patches, 324 tokens.
    assert seen["result"]["image_grid_thw"].tolist() == [[1, 36, 36], [1, 36, 36]]
    image_pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert int((seen["result"]["input_ids"] == image_pad).sum()) == 2 * 324


def test_answer_keeps_only_new_tokens_without_special_tokens(tiny_model, monkeypatch):
    prompter = create_prompter(f"vlm:{tiny_model},text=sharp photo", Runtime(device="cpu"))
    model, processor = prompter.load()
    tokenizer = processor.tokenizer
    answer_ids = (
        tokenizer.convert_tokens_to_ids(["<|im_start|>"])
        + tokenizer.encode(" cat, fur, whiskers\n", add_special_tokens=False)
        + tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    )

    def fake_generate(input_ids, **kwargs):
        assert kwargs["max_new_tokens"] == 32 and kwargs["do_sample"] is False
        return torch.cat([input_ids, torch.tensor([answer_ids])], dim=1)

    monkeypatch.setattr(model, "generate", fake_generate)
    assert prompter.describe(make_context(56)) == "cat, fur, whiskers, sharp photo,"


@pytest.mark.slow
def test_greedy_repeats_and_sampling_follows_the_seed(tiny_model):
    context = make_context(56)

    def answer(spec: str, seed: int) -> str:
        return create_prompter(spec, Runtime(device="cpu", seed=seed)).describe(context)

    greedy = f"vlm:{tiny_model},max_tokens=12"
    assert answer(greedy, 0) and answer(greedy, 0) == answer(greedy, 1)  # the seed plays no part

    sampled = f"vlm:{tiny_model},max_tokens=24,sample=true"
    rng_before = torch.get_rng_state()
    first = answer(sampled, 7)
    assert torch.equal(torch.get_rng_state(), rng_before), "sampling must not disturb the caller's RNG"
    assert first and first == answer(sampled, 7)
    assert answer(sampled, 8) != first
    assert step_seed(7, 1) != step_seed(7, 2) != step_seed(8, 1)


def test_official_layout_adapter_is_merged(tiny_model, tmp_path):
    adapter = tmp_path / "checkpoint-10000"
    tensors = save_lora_adapter(tiny_model, adapter, legacy_names=True)

    base, _ = create_prompter(f"vlm:{tiny_model}", Runtime(device="cpu")).load()
    prompter = create_prompter(f"vlm:{tiny_model},adapter={adapter}", Runtime(device="cpu"))
    merged, _ = prompter.load()

    scale = 32 / 8  # lora_alpha / r of the official adapter
    for layer in range(2):
        for projection in ("self_attn.q_proj", "mlp.down_proj"):
            key = f"base_model.model.model.layers.{layer}.{projection}"
            delta = scale * tensors[f"{key}.lora_B.weight"] @ tensors[f"{key}.lora_A.weight"]
            name = f"model.language_model.layers.{layer}.{projection}.weight"
            expected = base.get_parameter(name) + delta
            assert torch.allclose(merged.get_parameter(name), expected, atol=1e-6)
    # The official target regex also matches the vision MLP under transformers 5 names: left alone.
    name = "model.visual.blocks.0.mlp.gate_proj.weight"
    assert torch.equal(merged.get_parameter(name), base.get_parameter(name))
    assert prompter.settings()["adapter_sha256"] and len(prompter.settings()["adapter_sha256"]) == 64


def test_adapter_for_another_model_is_refused(tiny_model, tmp_path):
    adapter = tmp_path / "adapter"
    save_lora_adapter(tiny_model, adapter)
    weights = adapter / "adapter_model.safetensors"
    from safetensors.torch import load_file, save_file

    renamed = {k.replace("model.layers.", "transformer.h."): v for k, v in load_file(str(weights)).items()}
    save_file(renamed, str(weights))
    with pytest.raises(ChainZoomError, match="does not exist in this model"):
        create_prompter(f"vlm:{tiny_model},adapter={adapter}", Runtime(device="cpu")).load()


def test_missing_things_are_clear_errors(tiny_model, tmp_path):
    with pytest.raises(ChainZoomError, match="offline"):
        create_prompter("vlm", Runtime(device="cpu"))  # the paper's model is not in this machine's cache
    with pytest.raises(ChainZoomError, match="no such model folder"):
        create_prompter(f"vlm:{tmp_path / 'nothing'}", Runtime(device="cpu"))
    with pytest.raises(ChainZoomError, match="no config.json"):
        create_prompter(f"vlm:{tmp_path}", Runtime(device="cpu"))
    with pytest.raises(ChainZoomError, match="adapter_model.safetensors is missing"):
        (tmp_path / "lora").mkdir()
        (tmp_path / "lora" / "adapter_config.json").write_text("{}")
        create_prompter(f"vlm:{tiny_model},adapter={tmp_path / 'lora'}", Runtime(device="cpu"))
    with pytest.raises(ChainZoomError, match="unknown option"):
        create_prompter(f"vlm:{tiny_model},max_new_token=3", Runtime(device="cpu"))
    with pytest.raises(ChainZoomError, match="two models"):
        create_prompter(f"vlm:{tiny_model}", Runtime(device="cpu"), model="other/model")


def test_settings_name_what_changes_the_prompt(tiny_model):
    greedy = create_prompter(f"vlm:{tiny_model}", Runtime(device="cpu", seed=3)).settings()
    assert greedy["decoding"] == {"mode": "greedy"}  # the seed does not matter when greedy
    assert greedy["max_new_tokens"] == 32 and greedy["model"] == str(tiny_model)
    sampled = create_prompter(f"vlm:{tiny_model},sample=1,temperature=0.7", Runtime(device="cpu", seed=3)).settings()
    assert sampled["decoding"] == {"mode": "sample", "temperature": 0.7, "top_p": 1.0, "top_k": 0, "seed": 3}
    json.dumps(sampled)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="offloading is between a GPU and the CPU")
def test_offload_generates_on_the_gpu_and_parks_on_the_cpu(tiny_model, monkeypatch):
    prompter = create_prompter(f"vlm:{tiny_model},offload=true,max_tokens=4", Runtime(device="cuda"))
    model, _ = prompter.load()
    assert next(model.parameters()).device.type == "cpu"
    devices = []
    original = model.generate

    def spy(**kwargs):
        devices.append((next(model.parameters()).device.type, kwargs["input_ids"].device.type))
        return original(**kwargs)

    monkeypatch.setattr(model, "generate", spy)
    prompter.describe(make_context(56))
    assert devices == [("cuda", "cuda")]
    assert next(model.parameters()).device.type == "cpu"


def test_single_image_context_asks_the_official_single_question(tiny_model):
    """``context=single``: one image (the zoomed view) and the official single-image message."""
    from chainzoom.prompts.message import SINGLE_SYSTEM_MESSAGE

    prompter = create_prompter(f"vlm:{tiny_model},context=single,max_tokens=4", Runtime(device="cpu"))
    context = PromptContext(1, torch.rand(3, 56, 56), torch.rand(3, 56, 56))
    inputs = prompter.inputs(context)
    multi = create_prompter(f"vlm:{tiny_model},max_tokens=4", Runtime(device="cpu")).inputs(context)
    assert inputs["pixel_values"].shape[0] * 2 == multi["pixel_values"].shape[0]
    assert prompter.settings()["message"] == SINGLE_SYSTEM_MESSAGE and prompter.settings()["context"] == "single"
    assert isinstance(prompter.describe(context), str)
    with pytest.raises(ChainZoomError, match="context must be one of multiscale, single"):
        create_prompter(f"vlm:{tiny_model},context=triple", Runtime(device="cpu"))


def test_dtype_auto_is_float32_on_the_cpu(tiny_model):
    prompter = create_prompter(f"vlm:{tiny_model}", Runtime(device="cpu"))
    assert prompter.settings()["dtype"] == "float32"
