"""``chainzoom eval`` end to end on two small images with the interpolation backbone:
the report, the CSV, and the resume of an interrupted evaluation."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

from chainzoom.cli import build_parser
from chainzoom.errors import ChainZoomError
from chainzoom.evaluation import harness
from chainzoom.runs.progress import ZoomProgress

IMAGES = ("assets/photos/chelsea.png", "assets/photos/coffee.png")
MODES = ["chain", "direct", "onestep", "bicubic", "nearest"]
NO_REFERENCE = ["niqe", "brisque", "sharpness", "entropy"]


def run_eval(out: Path, *extra: str) -> int:
    args = build_parser().parse_args(
        [
            "eval",
            "--images",
            *IMAGES,
            "--scales",
            "4,16",
            "--backbone",
            "bicubic",
            "--view",
            "64",
            "--metrics",
            ",".join(NO_REFERENCE),
            "--out",
            str(out),
            "--quiet",
            *extra,
        ]
    )
    return args.handler(args)


def read_rows(out: Path) -> list[dict]:
    with open(out / "results.csv", newline="") as handle:
        return list(csv.DictReader(handle))


#: Every metric the module's evaluation has a value, a table and a plot for (NIQE has none at --view 64).
REPORTED = (
    "brisque",
    "sharpness",
    "entropy",
    "fidelity_psnr",
    "fidelity_ssim",
    "drift_psnr",
    "drift_delta_e",
    "drift_x0_delta_e",
    "seconds",
)


def measured(out: Path) -> list[dict]:
    """The rows of ``results.csv`` but the time they took."""
    return [row for row in read_rows(out) if row["metric"] != "seconds"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A whole evaluation (about 7 s on 2 cores): every test that uses it is marked slow."""
    out = tmp_path_factory.mktemp("eval") / "report"
    assert run_eval(out) == 0
    return out


@pytest.mark.slow
def test_results_cover_every_combination(finished):
    rows = read_rows(finished)
    keys = {(r["image"], r["mode"], int(r["scale"]), r["metric"]) for r in rows}
    for image in ("chelsea", "coffee"):
        for mode in MODES:
            for scale in (4, 16):
                # NIQE needs 192-px states: at --view 64 it has no value, and none is invented.
                for metric in REPORTED:
                    assert (image, mode, scale, metric) in keys
                assert (image, mode, scale, "niqe") not in keys
    assert len(rows) == len(keys) == 2 * len(MODES) * 2 * len(REPORTED)
    values = {(r["mode"], r["metric"]): float(r["value"]) for r in rows if r["image"] == "coffee" and r["scale"] == "4"}
    # Reaching x16 took the steps to x4 and more.
    assert all(
        float(r16["value"]) > float(r4["value"]) > 0
        for r4 in rows
        for r16 in rows
        if r4["metric"] == r16["metric"] == "seconds"
        and (r4["image"], r4["mode"], r4["scale"], r16["image"], r16["mode"], r16["scale"])
        == (r16["image"], r16["mode"], "4", r4["image"], r4["mode"], "16")
    )
    # Interpolation stays closer to the original than nearest neighbour does, and
    # nearest neighbour's blocks are the sharpest edges of all.
    assert values[("bicubic", "fidelity_psnr")] > values[("nearest", "fidelity_psnr")]
    assert values[("nearest", "sharpness")] > values[("bicubic", "sharpness")]


@pytest.mark.slow
def test_report_has_a_table_per_metric_like_the_paper(finished):
    report = (finished / "report.md").read_text(encoding="utf-8")
    for title in (
        "### BRISQUE ↓",
        "### Sharpness",
        "### Entropy",
        "### Fidelity PSNR (dB) ↑",
        "### Fidelity SSIM ↑",
        "### Drift PSNR",
        "### Drift ΔE",
        "### Seconds to reach the magnification: every step's time, summed ↓",
    ):
        assert title in report
    assert "| mode | x4 | x16 |" in report
    for mode in MODES:
        assert f"| {mode} | " in report
    assert " ± " in report  # two images: mean ± std
    assert "### NIQE ↓\n\nNo value: it needs states of at least 192 px a side." in report
    for name in REPORTED:
        assert f"(plots/{name}.png)" in report
        assert (finished / "plots" / f"{name}.png").stat().st_size > 5000
    for image in ("chelsea", "coffee"):
        assert f"(grids/{image}.png)" in report
        assert (finished / "grids" / f"{image}.png").stat().st_size > 5000


def test_learned_metrics_without_pyiqa_are_listed_not_available(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyiqa", None)
    out = tmp_path / "report"
    assert run_eval(out, "--metrics", "musiq,entropy", "--modes", "bicubic", "--no-fidelity", "--no-drift") == 0
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "- MUSIQ: pyiqa is not installed" in report
    assert {r["metric"] for r in read_rows(out)} == {"entropy", "seconds"}


@pytest.mark.slow
def test_interrupted_evaluation_resumes_to_identical_results(finished, tmp_path, monkeypatch):
    out = tmp_path / "report"
    calls = {"n": 0}
    step = ZoomProgress.step

    def interrupt_after_some_states(self, task, state):
        calls["n"] += 1
        if calls["n"] == 7:  # the first state of the third run: two runs done, one begun
            raise KeyboardInterrupt
        step(self, task, state)

    monkeypatch.setattr(ZoomProgress, "step", interrupt_after_some_states)
    with pytest.raises(KeyboardInterrupt):
        run_eval(out)
    assert not (out / "results.csv").exists()
    monkeypatch.setattr(ZoomProgress, "step", step)

    assert run_eval(out) == 0
    assert measured(out) == measured(finished)  # every value but the seconds each run took

    # A third run reuses every finished run: no state is made again and no model is built,
    # so the seconds recorded with the states are the same too.
    steps = sorted(out.glob("runs/**/step_*.png"))
    stamps = [p.stat().st_mtime_ns for p in steps]
    before = (out / "results.csv").read_bytes()
    monkeypatch.setattr(
        harness.ChainZoom, "backbone", property(lambda self: pytest.fail("a finished run built a model"))
    )
    assert run_eval(out) == 0
    assert [p.stat().st_mtime_ns for p in steps] == stamps
    assert (out / "results.csv").read_bytes() == before


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--scales", "4,10", "powers of 4"),
        (
            "--modes",
            "chain,zoom",
            r"modes: must be some of chain, direct, onestep, bicubic, nearest, got \['chain', 'zoom'\]",
        ),
        ("--metrics", "psnr", "unknown metric psnr"),
    ],
)
def test_bad_arguments_stop_before_any_run(tmp_path, option, value, message):
    out = tmp_path / "report"
    with pytest.raises(ChainZoomError, match=message):
        run_eval(out, option, value)
    assert not out.exists()


@pytest.mark.parametrize(("scale", "period", "view"), [(4, 64, 512), (16, 256, 128)])
def test_fidelity_reference_is_the_region_the_final_state_shows(tmp_path, scale, period, view):
    """On a smooth pattern, zooming the downscaled image back with bicubic must land on the
    original pixels: a reference off by one pixel costs more than 15 dB."""
    import math

    import torch

    from chainzoom.io.images import LoadedImage, load_image
    from chainzoom.metrics.drift import as_array
    from chainzoom.metrics.fidelity import psnr
    from chainzoom.pipeline.chain import run_states

    y, x = torch.meshgrid(torch.arange(512.0), torch.arange(512.0), indexing="ij")
    pattern = 0.5 + 0.4 * torch.sin(2 * math.pi * x / period) * torch.cos(2 * math.pi * y / (0.75 * period))
    image = LoadedImage(pattern.expand(3, -1, -1).contiguous(), None, 16)
    assert harness.fidelity_problem(image.size, scale, (512, 512)) is None
    path, plan, reference = harness.prepare_fidelity(image, scale, (512, 512), tmp_path)
    low = load_image(path)
    assert low.size == (512 // scale,) * 2 and plan.view == (view, view)
    final = as_array(list(run_states("bicubic", low, plan, None, None))[-1].image)
    aligned = psnr(final, reference)
    assert aligned > 45
    assert aligned > psnr(final[:, 1:], reference[:, :-1]) + 15
    assert aligned > psnr(final[1:], reference[:-1]) + 15


def test_fidelity_skips_magnifications_the_image_is_too_small_for():
    assert harness.fidelity_problem((512, 512), 64, (512, 512)) is None  # a 32-px comparison
    problem = harness.fidelity_problem((451, 300), 64, (448, 300))
    assert problem == "fidelity at x64 needs an image of at least 512 px a side; 451x300 is too small"


@pytest.mark.slow
def test_an_evaluation_reruns_from_its_config_and_from_toml(finished, tmp_path):
    """``config.json`` in the report folder makes the same evaluation again; a TOML file does too."""
    import json
    import shutil

    saved = json.loads((finished / "config.json").read_text())
    assert saved["scales"] == [4, 16] and saved["backbone"] == "bicubic" and saved["view"] == 64
    again = tmp_path / "again"
    shutil.copytree(finished, again)
    (again / "results.csv").unlink()
    config = json.loads((again / "config.json").read_text())
    (again / "config.json").write_text(json.dumps({**config, "out": str(again)}))
    args = build_parser().parse_args(["eval", "--rerun", str(again / "config.json")])
    assert args.handler(args) == 0
    assert (again / "results.csv").read_bytes() == (finished / "results.csv").read_bytes()

    toml = tmp_path / "eval.toml"
    images = ", ".join(f'"{i}"' for i in IMAGES)
    metrics = ", ".join(f'"{m}"' for m in NO_REFERENCE)
    toml.write_text(
        f'images = [{images}]\nscales = [4, 16]\nbackbone = "bicubic"\nview = 64\nmetrics = [{metrics}]\n'
        f'out = "{again}"\nquiet = true\n'
    )
    (again / "results.csv").unlink()
    args = build_parser().parse_args(["eval", "--config", str(toml)])
    assert args.handler(args) == 0
    assert (again / "results.csv").read_bytes() == (finished / "results.csv").read_bytes()


@pytest.mark.slow
def test_the_chain_runs_once_per_consistency_method(tmp_path):
    out = tmp_path / "report"
    assert run_eval(out, "--modes", "chain,bicubic", "--consistency", "none,anchor", "--no-fidelity") == 0
    rows = read_rows(out)
    assert {r["mode"] for r in rows} == {"chain", "chain+anchor", "bicubic"}
    assert (out / "runs" / "chelsea" / "chain+anchor" / "manifest.json").is_file()
    report = (out / "report.md").read_text()
    assert "chain+anchor" in report


@pytest.mark.slow
def test_the_model_modes_run_once_per_vlm_context_sharing_one_model(tmp_path, monkeypatch):
    """The paper's prompt ablation: the multi-scale message against the single-image one."""
    from chainzoom.prompts.vlm import VLMPrompter

    from ..tiny_vlm import build_tiny_qwen25vl

    tiny = build_tiny_qwen25vl(tmp_path / "tiny-qwen")
    loads = []
    original = VLMPrompter.load

    def counting(self):
        if self._loaded is None:
            loads.append(self.context)
        return original(self)

    monkeypatch.setattr(VLMPrompter, "load", counting)
    out = tmp_path / "report"
    extra = ["--modes", "chain,bicubic", "--contexts", "multiscale,single", "--no-fidelity"]
    assert run_eval(out, "--prompter", f"vlm:{tiny}", "--prompter-max-tokens", "4", *extra) == 0
    assert {r["mode"] for r in read_rows(out)} == {"chain@multiscale", "chain@single", "bicubic"}
    assert len(loads) == 1
    import json

    runs = out / "runs" / "chelsea"
    messages = {
        c: json.loads((runs / f"chain@{c}" / "manifest.json").read_text())["prompter"]["context"]
        for c in ("multiscale", "single")
    }
    assert messages == {"multiscale": "multiscale", "single": "single"}
    # Each run's request names the VLM and its context, so a run of another model is never reused.
    requests = {c: json.loads((runs / f"chain@{c}" / "manifest.json").read_text())["request"] for c in messages}
    for context, request in requests.items():
        assert request["prompter"] == f"vlm:{tiny}" and request["prompter_context"] == context


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--contexts", "wide"], r"contexts: must be some of multiscale, single, got \['wide'\]"),
        (["--contexts", "single"], "contexts: needs a prompter that has contexts"),
    ],
)
def test_contexts_are_checked_before_any_run(tmp_path, extra, message):
    out = tmp_path / "report"
    with pytest.raises(ChainZoomError, match=message):
        run_eval(out, *extra)
    assert not out.exists()


@pytest.mark.slow
def test_the_chain_runs_once_per_policy_and_a_stop_is_a_note(tmp_path, monkeypatch):
    """``--policy fixed,adaptive``: rows ``chain`` and ``chain~adaptive`` on the same photos."""
    from chainzoom.backbones import BACKBONES
    from chainzoom.metrics import niqe as niqe_module

    from .. import fakes

    monkeypatch.setitem(BACKBONES._builtin, "detail", fakes.DETAIL)
    monkeypatch.setitem(BACKBONES._builtin, "blur", fakes.BLUR)
    monkeypatch.setattr(niqe_module, "score_niqe", fakes.detail_deficit)
    out = tmp_path / "report"
    args = build_parser().parse_args(
        ["eval", "--images", IMAGES[0], "--scales", "4,16", "--backbone", "detail", "--view", "300"]
        + ["--metrics", "sharpness", "--modes", "chain", "--policy", "fixed,adaptive", "--backbones", "detail,blur"]
        + ["--factors", "4", "--no-fidelity", "--out", str(out), "--quiet"]
    )
    assert args.handler(args) == 0
    rows = read_rows(out)
    assert {r["mode"] for r in rows} == {"chain", "chain~adaptive"}
    adaptive = {int(r["scale"]) for r in rows if r["mode"] == "chain~adaptive" and r["metric"] == "sharpness"}
    assert adaptive == {4, 16}
    manifest = (out / "runs" / "chelsea" / "chain~adaptive" / "manifest.json").read_text()
    assert '"backbone": "detail"' in manifest

    stopped = tmp_path / "stopped"
    args = build_parser().parse_args(
        ["eval", "--images", IMAGES[0], "--scales", "4,16", "--backbone", "blur", "--view", "300"]
        + ["--metrics", "sharpness", "--modes", "chain", "--policy", "adaptive", "--factors", "4"]
        + ["--no-fidelity", "--no-drift", "--out", str(stopped), "--quiet"]
    )
    assert args.handler(args) == 0
    assert not [r for r in read_rows(stopped) if r["mode"] == "chain~adaptive"]
    assert "no state at x4, x16 (step 1: the best candidate (blur" in (stopped / "report.md").read_text()


def test_policy_options_without_the_adaptive_policy_are_refused(tmp_path):
    out = tmp_path / "report"
    with pytest.raises(ChainZoomError, match="backbones: applies only to policy adaptive"):
        run_eval(out, "--backbones", "realsr")
    with pytest.raises(ChainZoomError, match=r"policy: must be some of fixed, adaptive"):
        run_eval(out, "--policy", "fixed,greedy")
    assert not out.exists()
