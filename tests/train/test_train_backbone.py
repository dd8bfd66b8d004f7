"""Training OSEDiff on a tiny random SD3 (CPU): steps change the LoRAs, the files load, resume is exact."""

from __future__ import annotations

import csv

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("peft")

from chainzoom.backbones.diffusion import sd3 as osediff_sd3
from chainzoom.core.resample import resize
from chainzoom.errors import InputError, OptionError
from chainzoom.runtime import Runtime
from chainzoom.train.config import TrainBackboneConfig
from chainzoom.train.data import ImageSet, step_rng
from chainzoom.train.degradations import RealESRGANSettings
from chainzoom.train.lpips import load_lpips
from chainzoom.train.osediff import OSEDiffSD3Trainer, adaln_zero_names
from chainzoom.train.session import checkpoint_paths, run_train_backbone, save_checkpoint

from ..tiny_diffusion import build_sd3
from .helpers import write_photos, write_tiny_vgg

LOSS_COLUMNS = ("total", "mse", "lpips", "vsd", "reg")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    vgg, heads = write_tiny_vgg(root)
    return {
        "root": root,
        "base": build_sd3(root / "base"),
        "photos": write_photos(root / "photos", 8, 48),
        "vgg": vgg,
        "heads": heads,
    }


def config(setup, out, **changes) -> TrainBackboneConfig:
    options = {
        "base": str(setup["base"]),
        "images": (str(setup["photos"]),),
        "out": str(out),
        "steps": 2,
        "batch": 2,
        "crop": 32,
        "degradation": "bicubic",
        "lr": 1e-3,
        "vgg": str(setup["vgg"]),
        "lpips_heads": str(setup["heads"]),
        "checkpoint_every": 2,
        "quiet": True,
        "runtime": Runtime(device="cpu", threads=1),  # one thread: faster on the shared test CPUs
    }
    return TrainBackboneConfig(**{**options, **changes})


def rows(out):
    with (out / "losses.csv").open() as stream:
        return list(csv.DictReader(stream))


def test_two_steps_change_the_loras_and_write_the_official_files(setup, tmp_path):
    out = tmp_path / "run"
    run_train_backbone(config(setup, out), report=lambda line: None)
    lora_file, vae_file = checkpoint_paths(out, 2)
    tensors = torch.load(lora_file, weights_only=True)
    transformer = osediff_sd3.load_sd3(str(setup["base"]), torch.float32).transformer
    linears = osediff_sd3.adaln_zero_linears(transformer)
    assert isinstance(tensors, list) and len(tensors) == 2 * len(linears) == 2 * len(adaln_zero_names(transformer))
    for index, linear in enumerate(linears):
        up, down = tensors[2 * index], tensors[2 * index + 1]
        assert up.dtype == down.dtype == torch.float32
        assert up.shape == (linear.out_features, 4) and down.shape == (4, linear.in_features)
    assert any(t.abs().sum() > 0 for t in tensors[::2])  # up starts at zero: training moved it
    encoder = torch.load(vae_file, weights_only=True)
    assert all(v.dtype == torch.float16 for v in encoder.values())
    lora_b = [v for k, v in encoder.items() if ".lora_B.default_encoder." in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)
    logged = rows(out)
    assert [r["step"] for r in logged] == ["1", "2"]
    for row in logged:
        assert all(float(row[c]) >= 0 for c in LOSS_COLUMNS)
    assert (out / "losses.png").stat().st_size > 0 and (out / "resume.pt").is_file()


def test_the_written_files_are_what_inference_runs(setup, tmp_path):
    """osediff-sd3 with the files reproduces the trained generator's step (VAE file in float16)."""
    cfg = config(setup, tmp_path, loss="mse=1,vsd=1")
    trainer = make_trainer(setup, cfg)
    images = ImageSet(cfg.images, cfg.crop, "none")
    for step in (1, 2):
        rng = step_rng(0, step)
        samples = [images.sample(i, "bicubic", rng, RealESRGANSettings()) for i in images.indices(0, step, 2)]
        trainer.step(torch.stack([s.hr for s in samples]), torch.stack([s.lr_up for s in samples]), ["", ""], rng)
    save_checkpoint(tmp_path, trainer, 2)
    lora, vae = checkpoint_paths(tmp_path, 2)
    spec = f"{setup['base']},lora={lora},vae={vae}"
    trained = osediff_sd3.create(spec, Runtime(device="cpu"), latent="mode")
    untrained = osediff_sd3.create(str(setup["base"]), Runtime(device="cpu"), latent="mode")
    view = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(3))
    out = trained.upscale(view)
    assert (out - untrained.upscale(view)).abs().max() > 1e-3
    with torch.no_grad():
        lr_up = resize(view, (32, 32), "bicubic").unsqueeze(0)
        image, _ = trainer.generate(lr_up, trainer.condition([""]), generator=None)
    expected = (image[0].clamp(-1, 1) + 1) / 2
    assert (out - expected).abs().max() < 5e-3


def make_trainer(setup, cfg):
    torch.set_num_threads(1)  # as Runtime(threads=1) does for the runs
    return OSEDiffSD3Trainer.from_folder(
        str(setup["base"]),
        cfg.weights,
        rank=cfg.lora_rank,
        lr=cfg.lr,
        device=torch.device("cpu"),
        dtype=torch.float32,
        seed=0,
        lpips=load_lpips(cfg.vgg, cfg.lpips_heads),
    )


@pytest.mark.slow
def test_resume_repeats_exactly_the_steps_of_an_uninterrupted_run(setup, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    run_train_backbone(config(setup, straight, steps=4), report=lambda line: None)
    run_train_backbone(config(setup, split, steps=2), report=lambda line: None)
    with (split / "losses.csv").open("a") as stream:
        stream.write("3,bicubic,9,9,9,9,9,0\n")  # a step after the checkpoint, lost in a crash: redone
    run_train_backbone(config(setup, split, steps=4, resume=True), report=lambda line: None)
    assert [[r[c] for c in ("step", *LOSS_COLUMNS)] for r in rows(straight)] == [
        [r[c] for c in ("step", *LOSS_COLUMNS)] for r in rows(split)
    ]
    for a, b in zip(*(torch.load(checkpoint_paths(o, 4)[0], weights_only=True) for o in (straight, split))):
        assert torch.equal(a, b)


def test_bad_options_fail_in_one_line_before_anything_is_written(setup, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(OptionError, match="VGG16"):
        config(setup, out, vgg=None)
    with pytest.raises(OptionError, match="unknown term"):
        config(setup, out, loss="mse=1,gan=1")
    with pytest.raises(OptionError, match="multiple of 16"):
        config(setup, out, crop=40)
    with pytest.raises(InputError, match="smaller than the 64 px crop"):
        run_train_backbone(config(setup, out, crop=64), report=lambda line: None)
    assert not out.exists()
    with pytest.raises(OptionError, match="no training run"):
        run_train_backbone(config(setup, out, resume=True), report=lambda line: None)


def test_a_used_folder_needs_resume_and_the_same_settings(setup, tmp_path):
    out = tmp_path / "run"
    run_train_backbone(config(setup, out, steps=1, loss="mse=1"), report=lambda line: None)
    with pytest.raises(OptionError, match="already holds a training run"):
        run_train_backbone(config(setup, out, steps=2, loss="mse=1"), report=lambda line: None)
    with pytest.raises(OptionError, match="other settings for: lr"):
        run_train_backbone(config(setup, out, steps=2, loss="mse=1", lr=1e-4, resume=True), report=lambda line: None)


@pytest.mark.slow
def test_fifty_seeded_steps_lower_the_reconstruction_loss(setup, tmp_path):
    """The learning test: 50 steps of MSE on 8 tiny images; the loss on fixed pairs falls by > 10%.

    (The tiny random decoder cannot go below about 0.26 even with a freely optimised latent.)
    """
    cfg = config(setup, tmp_path, loss="mse=1", lr=1e-2)
    trainer = make_trainer(setup, cfg)
    images = ImageSet(cfg.images, cfg.crop, "none")
    fixed = [images.sample(i, "bicubic", step_rng(99, i), RealESRGANSettings()) for i in range(len(images))]
    hr = torch.stack([s.hr for s in fixed]) * 2 - 1
    lr_up = torch.stack([s.lr_up for s in fixed])

    def loss() -> float:
        with torch.no_grad():
            image, _ = trainer.generate(lr_up, trainer.condition([""] * len(fixed)), generator=None)
        return float(torch.nn.functional.mse_loss(image, hr))

    before = loss()
    for step in range(1, 51):
        rng = step_rng(0, step)
        batch = [images.sample(i, "bicubic", rng, RealESRGANSettings()) for i in images.indices(0, step, 2)]
        trainer.step(torch.stack([s.hr for s in batch]), torch.stack([s.lr_up for s in batch]), ["", ""], rng)
    after = loss()
    assert after < 0.9 * before, (before, after)


def test_gradient_checkpointing_changes_memory_not_results(setup, tmp_path):
    plain, checkpointed = tmp_path / "plain", tmp_path / "checkpointed"
    run_train_backbone(config(setup, plain), report=lambda line: None)
    run_train_backbone(config(setup, checkpointed, gradient_checkpointing=True), report=lambda line: None)
    columns = ("step", *LOSS_COLUMNS)
    assert [[r[c] for c in columns] for r in rows(plain)] == [[r[c] for c in columns] for r in rows(checkpointed)]
    for a, b in zip(*(torch.load(checkpoint_paths(o, 2)[0], weights_only=True) for o in (plain, checkpointed))):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)


def test_coarse_to_fine_is_realesrgan_then_bicubic(setup, tmp_path):
    cfg = config(setup, tmp_path, schedule="coarse-to-fine", steps=45, crop=80, degradation="realesrgan")
    assert [cfg.degradation_at(s) for s in (1, 25, 26, 45)] == ["realesrgan", "realesrgan", "bicubic", "bicubic"]
    with pytest.raises(OptionError, match="set by --schedule"):
        config(setup, tmp_path, schedule="coarse-to-fine", crop=80)  # with --degradation bicubic


def test_sidecar_captions_are_read_and_required(setup, tmp_path):
    write_photos(tmp_path / "captioned", 2, 48)
    (tmp_path / "captioned" / "photo_00.txt").write_text("a red\nbrick wall\n")
    with pytest.raises(InputError, match="photo_01.txt beside it"):
        ImageSet([str(tmp_path / "captioned")], 32, "sidecar")
    (tmp_path / "captioned" / "photo_01.txt").write_text("grass")
    assert ImageSet([str(tmp_path / "captioned")], 32, "sidecar").captions == ["a red brick wall", "grass"]


def test_half_precision_is_refused_on_the_cpu(setup, tmp_path):
    cfg = config(setup, tmp_path / "run", runtime=Runtime(device="cpu", dtype="bfloat16"))
    with pytest.raises(OptionError, match="bfloat16"):
        run_train_backbone(cfg, report=lambda line: None)
    assert not (tmp_path / "run").exists()


def test_sidecar_captions_train_with_a_bounded_prompt_cache(setup, tmp_path, monkeypatch):
    import chainzoom.train.osediff as trainer_module

    monkeypatch.setattr(trainer_module, "PROMPT_CACHE", 1)  # a batch of two captions overflows it
    photos = write_photos(tmp_path / "captioned", 2, 48)
    for index, text in enumerate(("a red brick wall", "green grass")):
        (photos / f"photo_{index:02d}.txt").write_text(text)
    cfg = config(setup, tmp_path / "run", images=(str(photos),), captions="sidecar", loss="mse=1", steps=1)
    run_train_backbone(cfg, report=lambda line: None)
    assert [r["step"] for r in rows(tmp_path / "run")] == ["1"]


def test_one_step_on_real_esrgan_pairs(setup, tmp_path):
    photos = write_photos(tmp_path / "large", 2, 96)
    cfg = config(setup, tmp_path / "run", images=(str(photos),), degradation="realesrgan", crop=80, steps=1)
    run_train_backbone(cfg, report=lambda line: None)
    assert rows(tmp_path / "run")[0]["degradation"] == "realesrgan"
