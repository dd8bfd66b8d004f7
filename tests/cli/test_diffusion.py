"""The diffusion backbone through the command line, with a tiny random SD3 stack."""

from __future__ import annotations

import json

from chainzoom.cli import main

from ..conftest import SAMPLE
from ..tiny_diffusion import build_sd3, write_sd3_transformer_lora, write_sd3_vae_encoder


def test_cli_chain_with_tiny_osediff_sd3_records_adapters_and_prompts(tmp_path):
    base = build_sd3(tmp_path / "base")
    lora, vae = tmp_path / "model_20001.pkl", tmp_path / "vae_encoder_20001.pt"
    write_sd3_transformer_lora(base, lora)
    write_sd3_vae_encoder(base, vae)
    out = tmp_path / "run"
    code = main(
        [
            "zoom",
            str(SAMPLE),
            "--scale",
            "16",
            "--view",
            "64",
            "--no-animation",
            "--quiet",
            "--backbone",
            f"osediff-sd3:{base},lora={lora},vae={vae}",
            "--prompter",
            'fixed:"a tabby cat"',
            "--efficient-memory",
            "--color-fix",
            "wavelet",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["backbone"]["text_aware"] is True
    assert manifest["request"]["efficient_memory"] is True and manifest["request"]["color_fix"] == "wavelet"
    settings = json.dumps(manifest["backbone"]["settings"])
    assert "model_20001.pkl" in settings and "vae_encoder_20001.pt" in settings
    assert [s["prompt"] for s in manifest["states"]] == [None, "a tabby cat", "a tabby cat"]
