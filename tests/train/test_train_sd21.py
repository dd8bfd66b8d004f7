"""The SD 2.1 variant (the original OSEDiff) on a tiny random SD 2.1: osediff.pkl that osediff-sd21 loads."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("peft")

from chainzoom.backbones.diffusion import sd21 as osediff_sd21
from chainzoom.core.resample import resize
from chainzoom.errors import OptionError
from chainzoom.runtime import Runtime
from chainzoom.train.config import TrainBackboneConfig
from chainzoom.train.data import ImageSet, step_rng
from chainzoom.train.degradations import RealESRGANSettings
from chainzoom.train.lpips import load_lpips
from chainzoom.train.osediff_sd21 import OSEDiffSD21Trainer
from chainzoom.train.session import run_train_backbone, save_checkpoint

from ..tiny_diffusion import build_sd21
from .helpers import write_photos, write_tiny_vgg


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd21")
    vgg, heads = write_tiny_vgg(root)
    return {
        "base": build_sd21(root / "base"),
        "photos": write_photos(root / "photos", 4, 48),
        "vgg": vgg,
        "heads": heads,
    }


def test_steps_write_osediff_pkl_that_osediff_sd21_runs_as_trained(setup, tmp_path):
    torch.set_num_threads(1)
    trainer = OSEDiffSD21Trainer(
        str(setup["base"]),
        {"mse": 1.0, "lpips": 2.0, "vsd": 1.0},
        rank=4,
        lr=1e-3,
        device=torch.device("cpu"),
        dtype=torch.float32,
        seed=0,
        lpips=load_lpips(setup["vgg"], setup["heads"]),
    )
    save_checkpoint(tmp_path, trainer, 0)
    images = ImageSet([str(setup["photos"])], 32, "none")
    conv_in = trainer.gen_unet.conv_in.base_layer.weight.detach().clone()
    for step in (1, 2):
        rng = step_rng(0, step)
        samples = [images.sample(i, "bicubic", rng, RealESRGANSettings()) for i in images.indices(0, step, 2)]
        losses = trainer.step(
            torch.stack([s.hr for s in samples]), torch.stack([s.lr_up for s in samples]), ["", ""], rng
        )
        assert losses.reg is not None and losses.vsd is not None and losses.lpips is not None
    assert not torch.equal(conv_in, trainer.gen_unet.conv_in.base_layer.weight)  # conv_in is trained whole
    save_checkpoint(tmp_path, trainer, 2)
    checkpoint = torch.load(tmp_path / "checkpoints" / "osediff_2.pkl", weights_only=True)
    assert set(checkpoint) >= {"state_dict_unet", "state_dict_vae", "rank_unet", "rank_vae", "unet_lora_others_modules"}
    assert not any(".reg." in k for k in checkpoint["state_dict_unet"])

    def backbone(step: int):
        spec = f"{setup['base']},ckpt={tmp_path / 'checkpoints' / f'osediff_{step}.pkl'}"
        return osediff_sd21.create(spec, Runtime(device="cpu"), latent="mode", color_fix="none")

    view = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(3))
    out = backbone(2).upscale(view)
    assert (out - backbone(0).upscale(view)).abs().max() > 1e-3
    with torch.no_grad():
        image, _ = trainer.generate(resize(view, (32, 32), "bicubic").unsqueeze(0), trainer.condition([""]), None)
    assert (out - (image[0].clamp(-1, 1) + 1) / 2).abs().max() < 1e-4


def options(setup) -> dict:
    return {
        "base": str(setup["base"]),
        "variant": "sd21",
        "images": (str(setup["photos"]),),
        "steps": 1,
        "batch": 1,
        "crop": 32,
        "degradation": "bicubic",
        "loss": "mse=1,vsd=1",
        "quiet": True,
        "runtime": Runtime(device="cpu", threads=1),
    }


def test_a_run_writes_the_spec_to_zoom_with_and_refuses_the_sd3_only_shift(setup, tmp_path):
    lines: list[str] = []
    run_train_backbone(TrainBackboneConfig(out=str(tmp_path / "run"), **options(setup)), report=lines.append)
    assert (tmp_path / "run" / "checkpoints" / "osediff_1.pkl").is_file()
    assert lines[-1].startswith(f"backbone: osediff-sd21:{setup['base']},ckpt=")
    with pytest.raises(OptionError, match="subtract-shift|subtract_shift"):
        TrainBackboneConfig(out=str(tmp_path / "x"), subtract_shift=True, **options(setup))


@pytest.mark.slow
def test_resume_is_exact_with_conv_in_trained_whole(setup, tmp_path):
    def run(out, steps, resume=False):
        config = {**options(setup), "steps": steps, "checkpoint_every": 1, "resume": resume}
        run_train_backbone(TrainBackboneConfig(out=str(out), **config), report=lambda line: None)
        return (out / "losses.csv").read_text().splitlines()

    straight = run(tmp_path / "straight", 2)
    run(tmp_path / "split", 1)
    split = run(tmp_path / "split", 2, resume=True)
    assert [row.rsplit(",", 1)[0] for row in straight] == [row.rsplit(",", 1)[0] for row in split]  # less seconds
    a, b = (
        torch.load(o / "checkpoints" / "osediff_2.pkl", weights_only=True)
        for o in (tmp_path / "straight", tmp_path / "split")
    )
    assert all(torch.equal(a["state_dict_unet"][k], b["state_dict_unet"][k]) for k in a["state_dict_unet"])
