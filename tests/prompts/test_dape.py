"""The ``dape`` prompter: RAM + DAPE files in the official layout, the official tag arithmetic.

Every model here is tests/tiny_ram.py's tiny random RAM (32 px, 10 tags), written key by
key in the official checkpoint layout and loaded through the user's path (the ``dape:``
spec, the CLI). The real ram_swin_large_14m.pth / DAPE.pth are not available here.
"""

from __future__ import annotations

import datetime
import json

import pytest
import torch
import torch.nn.functional as F

from chainzoom.cli import main
from chainzoom.errors import ChainZoomError
from chainzoom.prompts import PROMPTERS, create_prompter
from chainzoom.prompts.base import PromptContext
from chainzoom.prompts.dape.checkpoint import load_tagger
from chainzoom.prompts.dape.prompter import DapePrompter
from chainzoom.prompts.dape.swin import SwinConfig, SwinEncoder
from chainzoom.prompts.dape.tagging import RamConfig
from chainzoom.runtime import Runtime

from .. import tiny_ram
from ..conftest import SAMPLE
from ..tiny_ram import TAGS, build_tiny_ram

CPU = Runtime(device="cpu")
TAGGER_PARTS = ("visual_encoder.", "image_proj.", "label_embed", "wordvec_proj.", "fc.", "tagging_head.")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_ram(tmp_path_factory.mktemp("tiny-ram"))


def view(seed: int = 0, size: int = 48) -> PromptContext:
    image = torch.rand(3, size, size, generator=torch.Generator().manual_seed(seed))
    return PromptContext(1, image, image)


def test_the_tagger_has_exactly_rams_keys_and_reads_vision_multi(tiny, tmp_path):
    official = tiny_ram.ram_state()
    expected = {k for k in official if k.startswith(TAGGER_PARTS) and not k.endswith(("_index", "attn_mask"))}
    model, _ = load_tagger(tiny.ram, None, image_size=32, window=4)
    assert set(model.state_dict()) == expected
    for key in expected:
        assert torch.equal(model.state_dict()[key], official[key]), key
    legacy = tmp_path / "legacy.pth"  # the pre-zip torch.save format, which cannot be memory-mapped
    torch.save({"model": official}, legacy, _use_new_zipfile_serialization=False)
    assert load_tagger(legacy, None, image_size=32, window=4)[0].state_dict().keys() == expected
    older = build_tiny_ram(tmp_path / "older", vision_multi=True)
    renamed, _ = load_tagger(older.ram, None, image_size=32, window=4)
    assert torch.equal(renamed(torch.zeros(1, 3, 32, 32)), model(torch.zeros(1, 3, 32, 32)))


def test_dape_lora_is_merged_as_loralib_eval_merges_it_tied_layers_included(tiny):
    ram, _ = load_tagger(tiny.ram, None, image_size=32, window=4)
    merged, counts = load_tagger(tiny.ram, tiny.dape, image_size=32, window=4)
    lora = torch.load(tiny.dape, weights_only=True)
    r = tiny_ram.RANK
    # Swin qkv (loralib MergedLinear, enable_lora=[q, k, v] = [True, False, True]): q and v rows only
    name = "visual_encoder.layers.0.blocks.1.attn.qkv"
    a, b = lora[f"{name}.lora_A"], lora[f"{name}.lora_B"]
    dim = a.shape[1]
    delta_q, delta_v = b[:dim] @ a[:r], b[dim:] @ a[r:]
    expected = ram.state_dict()[f"{name}.weight"] + torch.cat([delta_q, torch.zeros(dim, dim), delta_v]) / r
    torch.testing.assert_close(merged.state_dict()[f"{name}.weight"], expected, rtol=0, atol=1e-6)
    # tagging head query/key: its own LoRA plus the tied tag encoder layer's, both at scale 1/r
    for layer in range(tiny_ram.LAYERS):
        for proj in ("query", "key"):
            head = f"tagging_head.encoder.layer.{layer}.crossattention.self.{proj}"
            tied = f"tag_encoder.encoder.layer.{layer}.crossattention.self.{proj}"
            delta = lora[f"{head}.lora_B"] @ lora[f"{head}.lora_A"] + lora[f"{tied}.lora_B"] @ lora[f"{tied}.lora_A"]
            expected = ram.state_dict()[f"{head}.weight"] + delta / r
            torch.testing.assert_close(merged.state_dict()[f"{head}.weight"], expected, rtol=0, atol=1e-6)
    blocks = sum(tiny_ram.DEPTHS)
    assert counts == {"visual_encoder": blocks, "tagging_head": 2 * tiny_ram.LAYERS, "tag_encoder": 2 * tiny_ram.LAYERS}
    # values (no LoRA in RAM-LoRA) and everything outside the LoRA layers are RAM's
    for key in ("tagging_head.encoder.layer.0.crossattention.self.value.weight", "fc.weight", "label_embed"):
        assert torch.equal(merged.state_dict()[key], ram.state_dict()[key])


def layer_norm(x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], eps=1e-12)


def test_tags_follow_the_official_arithmetic_on_controlled_logits(tmp_path):
    """Zero every attention/feed-forward output so each tag's logit is fc(LN⁴(relu(P·e))): known without the image."""
    state = tiny_ram.ram_state()
    for layer in range(tiny_ram.LAYERS):
        prefix = f"tagging_head.encoder.layer.{layer}"
        for dense in ("crossattention.output.dense", "output.dense"):
            state[f"{prefix}.{dense}.weight"].zero_()
            state[f"{prefix}.{dense}.bias"].zero_()
        for norm in ("crossattention.output.LayerNorm", "output.LayerNorm"):
            state[f"{prefix}.{norm}.weight"].fill_(1.0)
            state[f"{prefix}.{norm}.bias"].zero_()
    x = F.relu(state["label_embed"] @ state["wordvec_proj.weight"].T + state["wordvec_proj.bias"])
    for _ in range(2 * tiny_ram.LAYERS):
        x = layer_norm(x)
    probabilities = torch.sigmoid(x @ state["fc.weight"][0] + state["fc.bias"])
    chosen = [1, 4, 7]  # dog, brick wall, grass: not adjacent, so the order is tested too
    thresholds = [
        min(max(p - 0.02 if c in chosen else p + 0.02, 0.0), 1.0) for c, p in enumerate(probabilities.tolist())
    ]
    folder = tmp_path / "controlled"
    tiny = build_tiny_ram(folder, thresholds=thresholds)
    torch.save({"model": state}, tiny.ram)  # the controlled weights, same layout

    prompter = create_prompter(tiny.spec(), CPU)
    assert prompter.describe(view(0)) == "dog, brick wall, grass"
    assert prompter.describe(view(1)) == "dog, brick wall, grass"
    with_text = create_prompter(tiny.spec(text="high quality"), CPU)
    assert with_text.describe(view(0)) == "dog, brick wall, grass, high quality,"
    # one global threshold instead of the per-tag file gives RAM's plain sigmoid > 0.68
    global_threshold = create_prompter(tiny.spec(threshold=0.68), CPU)
    assert isinstance(global_threshold, DapePrompter) and global_threshold.thresholds_path is None
    expected = ", ".join(t for t, p in zip(TAGS, probabilities.tolist()) if p > 0.68)
    assert global_threshold.describe(view(0)) == expected


def test_thresholds_file_is_found_next_to_the_tag_list_and_is_per_tag(tiny, tmp_path):
    prompter = create_prompter(tiny.spec(), CPU)
    assert isinstance(prompter, DapePrompter)
    assert prompter.thresholds_path == str(tiny.thresholds)
    logits = prompter.logits(view(2).view)
    assert logits.shape == (len(TAGS),) and logits.dtype == torch.float32
    fired = [tag for tag, p in zip(TAGS, torch.sigmoid(logits).tolist()) if p > 0.68]
    assert prompter.describe(view(2)) == ", ".join(fired)
    assert create_prompter(tiny.spec(dape=False), CPU).logits(view(2).view).ne(logits).any()  # DAPE matters


def test_preprocessing_is_rams_resize_and_imagenet_normalisation(tiny):
    prompter = create_prompter(tiny.spec(), CPU)
    assert isinstance(prompter, DapePrompter)
    seen: list[torch.Tensor] = []
    assert prompter.model is not None
    prompter.model.visual_encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    image = view(3, 80).view
    prompter.logits(image)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    # torchvision's Resize((S, S)) on a float tensor: bilinear, antialiased, corners not aligned
    resized = F.interpolate(image[None], size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    assert torch.equal(seen[0], (resized - mean) / std)
    plain = F.interpolate(image[None], size=(32, 32), mode="bilinear", align_corners=False)
    assert not torch.allclose(seen[0], (plain - mean) / std)  # the antialiasing is there
    grey = prompter.pixels(torch.full((3, 512, 512), 0.25))
    torch.testing.assert_close(grey, ((0.25 - mean) / std).expand(1, 3, 32, 32))
    official_size = DapePrompter(str(tiny.ram), dape=None, tags=str(tiny.tags), thresholds=None, threshold=0.68)
    assert official_size.pixels(image).shape == (1, 3, 384, 384)


def test_swin_encoder_matches_transformers_swin():
    """An independent implementation of the same Swin (window clamp at the last stage included)."""
    transformers = pytest.importorskip("transformers")
    config = SwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=(2, 2), num_heads=(1, 2), window_size=4)
    ours = SwinEncoder(config).eval()
    reference = transformers.SwinModel(
        transformers.SwinConfig(
            image_size=32, patch_size=4, embed_dim=8, depths=[2, 2], num_heads=[1, 2], window_size=4, drop_path_rate=0.0
        )
    ).eval()
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for tensor in ours.parameters():
            tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.3)
    mine = ours.state_dict()
    theirs: dict[str, torch.Tensor] = {
        "embeddings.patch_embeddings.projection.weight": mine["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": mine["patch_embed.proj.bias"],
        "embeddings.norm.weight": mine["patch_embed.norm.weight"],
        "embeddings.norm.bias": mine["patch_embed.norm.bias"],
        "layernorm.weight": mine["norm.weight"],
        "layernorm.bias": mine["norm.bias"],
    }
    for stage, depth in enumerate(config.depths):
        for block in range(depth):
            src, dst = f"layers.{stage}.blocks.{block}", f"encoder.layers.{stage}.blocks.{block}"
            for part, name in zip(("q", "k", "v"), mine[f"{src}.attn.qkv.weight"].chunk(3)):
                theirs[f"{dst}.attention.{part}_proj.weight"] = name
            for part, name in zip(("q", "k", "v"), mine[f"{src}.attn.qkv.bias"].chunk(3)):
                theirs[f"{dst}.attention.{part}_proj.bias"] = name
            pairs = {
                "attention.o_proj": "attn.proj",
                "layernorm_before": "norm1",
                "layernorm_after": "norm2",
                "mlp.fc1": "mlp.fc1",
                "mlp.fc2": "mlp.fc2",
            }
            for their, my in pairs.items():
                theirs[f"{dst}.{their}.weight"] = mine[f"{src}.{my}.weight"]
                theirs[f"{dst}.{their}.bias"] = mine[f"{src}.{my}.bias"]
            table = mine[f"{src}.attn.relative_position_bias_table"]
            theirs[f"{dst}.attention.relative_position_bias.relative_position_bias_table"] = table
        if stage < len(config.depths) - 1:
            theirs[f"encoder.layers.{stage}.downsample.reduction.weight"] = mine[
                f"layers.{stage}.downsample.reduction.weight"
            ]
            theirs[f"encoder.layers.{stage}.downsample.norm.weight"] = mine[f"layers.{stage}.downsample.norm.weight"]
            theirs[f"encoder.layers.{stage}.downsample.norm.bias"] = mine[f"layers.{stage}.downsample.norm.bias"]
    missing, unexpected = reference.load_state_dict(theirs, strict=False)
    assert not unexpected and all("relative_position_index" in key for key in missing), missing
    pixels = torch.randn(2, 3, 32, 32, generator=gen)
    with torch.no_grad():
        out = ours(pixels)
        expected = reference(pixel_values=pixels)
    torch.testing.assert_close(out[:, 1:], expected.last_hidden_state, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out[:, 0], expected.pooler_output, rtol=1e-4, atol=1e-5)


def test_the_settings_change_with_the_weights(tiny, tmp_path):
    other = build_tiny_ram(tmp_path / "other", seed=3)
    first, second = create_prompter(tiny.spec(), CPU), create_prompter(other.spec(), CPU)
    changed = {key for key in first.settings() if first.settings()[key] != second.settings()[key]}
    assert {"ram", "ram_fingerprint", "dape", "dape_sha256"} <= changed
    moved = tmp_path / "moved.pth"
    moved.write_bytes(other.ram.read_bytes())
    copy = create_prompter(tiny.spec().replace(str(tiny.ram), str(moved)), CPU)
    assert copy.settings()["ram_fingerprint"] == second.settings()["ram_fingerprint"]


def test_registered_with_its_facts():
    entry = PROMPTERS.entry("dape")
    assert entry.required and entry.facts.uses_model and entry.facts.licence.startswith("Apache-2.0")
    assert {"device", "dtype", "text", "dape", "tags", "thresholds"} <= set(entry.facts.options)
    assert entry.extra is None  # plain torch: nothing to install


def test_cli_prompts_and_zoom_use_the_dape_spec(tiny, tmp_path, capsys):
    spec = tiny.spec()
    args = ["--scale", "16", "--backbone", "bicubic", "--view", "64", "--prompter", spec]
    assert main(["prompts", str(SAMPLE), *args]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("step ") for line in lines)
    out = tmp_path / "run"
    assert main(["zoom", str(SAMPLE), *args, "--prompt", "sharp", "--no-animation", "--quiet", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    prompts = [state["prompt"] for state in manifest["states"]][1:]
    assert len(prompts) == 2 and all(p.endswith(", sharp,") or p == ", sharp," for p in prompts), prompts
    assert manifest["prompter"]["id"] == "dape" and manifest["prompter"]["dape_sha256"]
    assert manifest["prompter"]["ram_fingerprint"]


def _truncate(path, target):
    data = path.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


BAD_FILES = {
    "missing RAM": (lambda t, d: t.spec().replace(str(t.ram), str(d / "nope.pth")), "does not exist"),
    "truncated RAM": (lambda t, d: t.spec().replace(str(t.ram), str(_truncate(t.ram, d / "half.pth"))), "cannot read"),
    "no 'model' dict": (lambda t, d: _save(t, d, tiny_ram.ram_state(), "ram"), "not a RAM checkpoint"),
    "not RAM keys": (lambda t, d: _save(t, d, {"model": {"w": torch.zeros(2)}}, "ram"), "not a RAM checkpoint"),
    "wrong shape": (
        lambda t, d: _save(t, d, {"model": _edit("image_proj.weight", torch.zeros(12, 5))}, "ram"),
        "shape",
    ),
    "missing tensor": (lambda t, d: _save(t, d, {"model": _edit("visual_encoder.norm.weight", None)}, "ram"), "lacks"),
    "not tensors": (lambda t, d: _save(t, d, {"model": {"x": datetime.date(2020, 1, 1)}}, "ram"), "cannot read"),
    "missing DAPE": (lambda t, d: t.spec().replace(str(t.dape), str(d / "nope.pth")), "does not exist"),
    "truncated DAPE": (lambda t, d: t.spec().replace(str(t.dape), str(_truncate(t.dape, d / "h.pth"))), "cannot read"),
    "RAM as DAPE": (lambda t, d: t.spec().replace(str(t.dape), str(t.ram)), "not a DAPE file"),
    "DAPE of another model": (lambda t, d: _save(t, d, _lora_edit(torch.zeros(16, 9)), "dape"), "does not fit"),
    "half a LoRA pair": (lambda t, d: _save(t, d, _lora_edit(None), "dape"), "only one of"),
}


def _edit(key, value):
    state = tiny_ram.ram_state()
    if value is None:
        del state[key]
    else:
        state[key] = value
    return state


def _lora_edit(value):
    state = tiny_ram.dape_state()
    key = "visual_encoder.layers.0.blocks.0.attn.qkv.lora_A"
    if value is None:
        del state[key]
    else:
        state[key] = value
    return state


def _save(tiny, folder, content, which):
    path = folder / f"bad-{which}.pth"
    torch.save(content, path)
    original = tiny.ram if which == "ram" else tiny.dape
    return tiny.spec().replace(str(original), str(path))


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_each_bad_file_is_one_clear_line(case, tiny, tmp_path):
    make, words = BAD_FILES[case]
    with pytest.raises(ChainZoomError, match=words) as caught:
        create_prompter(make(tiny, tmp_path), CPU)
    assert "\n" not in str(caught.value) and str(caught.value).startswith("dape")


def test_tag_lists_and_thresholds_that_do_not_fit_are_refused(tiny, tmp_path):
    short = tmp_path / "tags" / "ram_tag_list.txt"
    short.parent.mkdir()
    short.write_text("\n".join(TAGS[:9]))
    (short.parent / "ram_tag_list_threshold.txt").write_text("0.68\n" * 9)
    with pytest.raises(ChainZoomError, match="has 9 tags, the checkpoint's tagging head has 10"):
        create_prompter(tiny.spec().replace(str(tiny.tags), str(short)), CPU)
    thresholds = tmp_path / "t.txt"
    thresholds.write_text("0.68\n" * 9)
    with pytest.raises(ChainZoomError, match="has 9 lines, the tag list has 10"):
        create_prompter(tiny.spec(thresholds=thresholds), CPU)
    thresholds.write_text("0.68\n" * 9 + "high\n")
    with pytest.raises(ChainZoomError, match="line 10 is not a number"):
        create_prompter(tiny.spec(thresholds=thresholds), CPU)
    lonely = tmp_path / "lonely.txt"
    lonely.write_text("\n".join(TAGS))
    with pytest.raises(ChainZoomError, match="no per-tag thresholds"):
        create_prompter(tiny.spec().replace(str(tiny.tags), str(lonely)), CPU)
    with pytest.raises(ChainZoomError, match="not both"):
        create_prompter(tiny.spec(thresholds=thresholds, threshold=0.5), CPU)
    with pytest.raises(
        ChainZoomError, match="has position tables for 2x2 windows, a 64 px input with window=4 needs 4x4"
    ):
        create_prompter(tiny.spec().replace("image_size=32", "image_size=64"), CPU)
    with pytest.raises(ChainZoomError, match="has position tables for 4x4 windows, a 32 px input with window=2"):
        create_prompter(tiny.spec().replace("window=4", "window=2"), CPU)
    with pytest.raises(ChainZoomError, match="do not tile stage 0's 9x9 map at a 36 px input"):
        create_prompter(tiny.spec().replace("image_size=32", "image_size=36"), CPU)
    with pytest.raises(ChainZoomError, match="is for GPUs"):
        create_prompter(tiny.spec(dtype="float16"), CPU)
    with pytest.raises(ChainZoomError, match="unknown option"):
        create_prompter(tiny.spec(treshold=0.5), CPU)


def test_a_bad_file_through_the_cli_exits_2_with_one_line(tiny, tmp_path, capsys):
    spec = tiny.spec().replace(str(tiny.dape), str(tiny.ram))
    assert main(["prompts", str(SAMPLE), "--backbone", "bicubic", "--scale", "16", "--prompter", spec]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not a DAPE file" in err


def test_the_default_sizes_are_rams_swin_l_at_384():
    """RAM's config_swinL_384.json and q2l_config.json: the last Swin stage (12x12) is one unshifted window."""
    config = RamConfig()
    swin, head = config.swin, config.head
    assert (swin.image_size, swin.patch_size, swin.embed_dim, swin.window_size) == (384, 4, 192, 12)
    assert swin.depths == (2, 2, 18, 2) and swin.num_heads == (6, 12, 24, 48) and swin.num_features == 1536
    assert [swin.resolution(s) for s in range(4)] == [96, 48, 24, 12]
    assert [swin.stage_window(s) for s in range(4)] == [(12, 6), (12, 6), (12, 6), (12, 0)]
    assert (head.hidden_size, head.num_layers, head.num_heads, head.intermediate_size) == (768, 2, 4, 3072)
    assert (head.embed_width, head.num_classes) == (512, 4585)
