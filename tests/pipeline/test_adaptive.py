"""``--policy adaptive``: per-step backbone and factor by a no-reference score, early stop, resume."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

import chainzoom
from chainzoom.backbones import BACKBONES
from chainzoom.cli import main
from chainzoom.metrics import niqe as niqe_module
from chainzoom.runs.render import state_label

from .. import fakes
from ..conftest import ROOT, SAMPLE, kill_after_states


@pytest.fixture
def fake_backbones(monkeypatch):
    """``detail`` and ``blur`` as backbones, and the policy's NIQE replaced by a detail score."""
    monkeypatch.setitem(BACKBONES._builtin, "detail", fakes.DETAIL)
    monkeypatch.setitem(BACKBONES._builtin, "blur", fakes.BLUR)
    monkeypatch.setattr(niqe_module, "score_niqe", fakes.detail_deficit)


def photo(size: int = 256) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(float(size)), torch.arange(float(size)), indexing="ij")
    return torch.stack([0.5 + 0.4 * torch.sin(x / 9), 0.5 + 0.4 * torch.cos(y / 7), (x + y) / (2 * size)]).clamp(0, 1)


def zoom(**options):
    return chainzoom.zoom(photo(), backbone="detail", policy="adaptive", view=192, **options)


def test_the_policy_picks_the_better_backbone_at_every_step_and_reaches_the_scale(fake_backbones):
    result = zoom(scale=16, backbones=("blur", "detail"))
    decisions = [s.decision for s in result.states[1:]]
    assert decisions and all(d["backbone"] == "detail" for d in decisions)
    for d in decisions:  # the kept candidate is the best score it compared
        assert d["scores"][f"detail@{d['factor']:g}"] == min(d["scores"].values())
        assert d["gain"] > 0
    assert math.isclose(math.prod(d["factor"] for d in decisions), 16)
    assert math.isclose(result.states[-1].magnification, 16)  # relative to the input's own pixels
    boxes = [s.box for s in result.states]
    for outer, inner in zip(boxes, boxes[1:]):  # each state inside the one before
        assert outer.x0 <= inner.x0 < inner.x1 <= outer.x1 and outer.y0 <= inner.y0 < inner.y1 <= outer.y1
    assert result.plan.steps[-1].box == result.states[-1].box


def test_smaller_steps_are_taken_when_they_score_better(fake_backbones):
    """Nearest x4 resampled down to a 2x step keeps more edges per pixel than a 4x step does."""
    result = zoom(scale=16, backbones=("detail",))
    assert [s.decision["factor"] for s in result.states[1:]] == [2.0, 2.0, 2.0, 2.0]
    assert all(set(s.decision["scores"]) == {"detail@2", "detail@4"} for s in result.states[1:4])
    assert set(result.states[4].decision["scores"]) == {"detail@2"}  # the last 2x: no room for 4x
    only_four = zoom(scale=16, backbones=("detail",), factors=(4.0,))
    assert [s.decision["factor"] for s in only_four.states[1:]] == [4.0, 4.0]


def test_a_backbone_that_returns_a_blurred_copy_stops_the_chain_with_the_reason(fake_backbones, tmp_path):
    out = tmp_path / "run"
    result = zoom(scale=16, backbones=("blur",), out=out)
    assert len(result.states) == 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["policy"]["stopped"].startswith("step 1: the best candidate (blur")
    assert "no more detail than interpolation" in manifest["policy"]["stopped"]
    assert manifest["policy"]["decisions"][0]["gain"] < 0
    never = zoom(scale=16, backbones=("blur",), stop_below=None)
    assert len(never.states) > 1  # without a threshold it goes on


@pytest.mark.slow
def test_a_resumed_run_repeats_the_same_decisions(fake_backbones, tmp_path):
    options = {"scale": 16.0, "backbones": ("blur", "detail"), "animation": False}
    whole = zoom(out=tmp_path / "whole", **options)
    cz = chainzoom.ChainZoom("detail")
    states = cz.iter_zoom(photo(), policy="adaptive", view=192, out=tmp_path / "killed", **options)
    for _, _ in zip(range(2), states):  # state 0 and step 1, then the run is abandoned
        pass
    states.close()
    partial = json.loads((tmp_path / "killed" / "manifest.json").read_text())
    assert len(partial["states"]) == 2 and not partial["complete"]
    resumed = chainzoom.ChainZoom("detail")(photo(), policy="adaptive", view=192, out=tmp_path / "killed", **options)
    assert [s.decision for s in resumed.states] == [s.decision for s in whole.states]
    assert [json.loads((tmp_path / k / "manifest.json").read_text())["policy"] for k in ("whole", "killed")] == [
        json.loads((tmp_path / "whole" / "manifest.json").read_text())["policy"]
    ] * 2
    assert (tmp_path / "whole" / "step_04.png").read_bytes() == (tmp_path / "killed" / "step_04.png").read_bytes()


KILLABLE = """
import sys
from chainzoom.backbones import BACKBONES
from tests.app.fakes import SLOW
BACKBONES.register(SLOW)
from chainzoom.cli import main
sys.exit(main(sys.argv[1:]))
"""


def adaptive_process(out) -> subprocess.Popen:
    """``chainzoom zoom --policy adaptive`` in its own process, with a backbone that pauses a second a step."""
    args = [str(SAMPLE), "--scale", "64", "--view", "288", "--policy", "adaptive", "--backbones", "slow,bicubic"]
    args += ["--factors", "2,4", "--stop-below", "none", "--no-animation", "--quiet", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    return subprocess.Popen([sys.executable, "-c", KILLABLE, "zoom", *args], cwd=ROOT, env=env)


@pytest.mark.slow
def test_decisions_are_identical_after_a_kill_and_resume(tmp_path):
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    assert adaptive_process(reference).wait(timeout=300) == 0
    manifest = resumed / "manifest.json"
    kill_after_states(adaptive_process(resumed), manifest, 2)
    expected = json.loads((reference / "manifest.json").read_text())
    killed = json.loads(manifest.read_text())
    assert 2 <= len(killed["states"]) < len(expected["states"]) and not killed["complete"]
    assert adaptive_process(resumed).wait(timeout=300) == 0
    finished = json.loads(manifest.read_text())
    assert finished["policy"]["decisions"] == expected["policy"]["decisions"]
    assert [s.get("decision") for s in finished["states"]] == [s.get("decision") for s in expected["states"]]
    assert [s["sha256"] for s in finished["states"]] == [s["sha256"] for s in expected["states"]]


def test_the_strip_labels_say_what_the_policy_chose(fake_backbones):
    result = zoom(scale=4, backbones=("detail",), factors=(4.0,))
    assert state_label(result.states[1]) == "x4 detail 4x"


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        (["--policy", "adaptive", "--mode", "bicubic"], "--policy: adaptive applies to mode chain"),
        (["--policy", "adaptive", "--factors", "2,8"], "--factors: must be step factors in (1, 4]"),
        (["--policy", "adaptive", "--backbones", "realesrgan,nope"], "--backbones: unknown backbone 'nope'"),
        (["--backbones", "realsr"], "--backbones: applies only to policy adaptive"),
        (["--policy", "adaptive", "--view", "128"], "--view: 128x84: the adaptive policy scores with NIQE"),
        (["--policy", "wise"], "--policy: must be one of fixed, adaptive"),
    ],
)
def test_bad_policy_options_are_one_line_and_exit_2(tmp_path, capsys, extra, problem):
    out = tmp_path / "never"
    assert main(["zoom", str(SAMPLE), "--scale", "16", "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert problem in err and "\n" not in err
    assert not out.exists()


@pytest.mark.slow
def test_with_niqe_the_real_model_beats_a_blurred_copy(monkeypatch, tmp_path):
    """The real score on the bundled photo: Real-ESRGAN against the blurred copy, one 4x step."""
    monkeypatch.setitem(BACKBONES._builtin, "blur", fakes.BLUR)
    result = chainzoom.zoom(
        SAMPLE, scale=4, policy="adaptive", backbones=("blur", "realesrgan"), factors=(4.0,), view=384
    )
    decision = result.states[1].decision
    assert decision["backbone"] == "realesrgan" and decision["score"] == "niqe"
    assert decision["scores"]["realesrgan@4"] < decision["scores"]["blur@4"]


def test_a_finished_stopped_run_reopened_runs_no_candidate_again(fake_backbones, tmp_path, monkeypatch):
    out = tmp_path / "run"
    first = zoom(scale=16, backbones=("blur",), out=out)
    calls = []
    upscale = fakes.BlurBackbone.upscale
    monkeypatch.setattr(fakes.BlurBackbone, "upscale", lambda self, *a: calls.append(1) or upscale(self, *a))
    again = zoom(scale=16, backbones=("blur",), out=out)
    assert calls == [] and len(again.states) == len(first.states) == 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["policy"]["stopped"].startswith("step 1: the best candidate (blur")
