"""Prompters through the command line: flags reach the prompter, prompts are cached per run."""

from __future__ import annotations

import json

import pytest

from chainzoom.cli import main

from ..conftest import SAMPLE
from ..tiny_vlm import build_tiny_qwen25vl


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    return build_tiny_qwen25vl(tmp_path_factory.mktemp("tiny-qwen"))


def test_vlm_prompts_are_recorded_cached_and_reused_on_resume(tmp_path, tiny_vlm, monkeypatch):
    out = tmp_path / "run"
    args = [
        "zoom",
        str(SAMPLE),
        "--scale",
        "16",
        "--view",
        "64",
        "--backbone",
        "bicubic",
        "--no-animation",
        "--quiet",
        "--prompter",
        f"vlm:{tiny_vlm}",
        "--prompter-max-tokens",
        "6",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    prompts = [s["prompt"] for s in manifest["states"]]
    assert prompts[0] is None and all(isinstance(p, str) for p in prompts[1:])
    assert manifest["request"]["prompter_max_tokens"] == 6
    assert manifest["prompter"]["max_new_tokens"] == 6
    cache = json.loads((out / "prompts.json").read_text())
    assert sorted(e["prompt"] for e in cache["prompts"].values()) == sorted(prompts[1:])

    # Forget the last state, as a killed run would, and resume: the model must not be asked again.
    manifest["states"] = manifest["states"][:2]
    manifest["complete"] = False
    (out / "manifest.json").write_text(json.dumps(manifest))
    from chainzoom.prompts import vlm

    def no_generation(*a, **k):
        raise AssertionError("the cached prompt should have been used")

    monkeypatch.setattr(vlm.VLMPrompter, "describe", no_generation)
    assert main(args) == 0
    resumed = json.loads((out / "manifest.json").read_text())
    assert [s["prompt"] for s in resumed["states"]] == prompts


def test_prompter_flags_on_a_prompter_without_options_are_refused(tmp_path, capsys):
    code = main(["zoom", str(SAMPLE), "--prompter-offload", "--out", str(tmp_path / "o"), "--quiet"])
    assert code == 2
    assert "--prompter-offload: does not apply to prompter 'null' (it takes none)" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_prompts_command_prints_and_scores(capsys):
    assert (
        main(
            [
                "prompts",
                str(SAMPLE),
                "--scale",
                "16",
                "--backbone",
                "bicubic",
                "--view",
                "64",
                "--prompter",
                'fixed:"the second image shows sky sky"',
                "--score",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    assert all("phrase=-" in line and "repetition=-" in line for line in lines)
