"""``chainzoom study create``: pairwise trials from run folders of the same images and magnifications.

Each ``--runs`` folder is one *method* (``null`` prompts, VLM prompts, a fixed policy...):
a run folder of ``chainzoom zoom``, or a folder of them (one per image, as a zoom of
several inputs writes). Two runs are of the same image when their requests name the
same input (its SHA-256) and zoom centre; their states are compared where both have a
state of the same magnification and box. Each such pair of states, for each pair of
methods, is one trial; the input itself (x1) is the same for every method and makes
none, and neither does a pair of identical files.

The study folder is self-contained, so a study can be copied to another machine and
served there: ``study.json`` (methods, trials, the secret that decides each rater's
sides and order) and ``images/`` (the states compared, named by their SHA-256, so the
page's URLs say nothing about the method). One more trial is an *attention check*: a
state against a strongly blurred copy of itself, which every attentive rater gets right.
"""

from __future__ import annotations

import json
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from itertools import combinations
from pathlib import Path
from typing import Any

from chainzoom import __version__
from chainzoom.errors import ChainZoomError, OptionError
from chainzoom.io.atomic import atomic_write, atomic_write_json
from chainzoom.io.digest import file_sha256
from chainzoom.runs.manifest import MANIFEST, check_manifest

STUDY = "study.json"
IMAGES = "images"
VOTES = "votes.sqlite"
#: The attention check's id and the name its blurred side goes by in the votes.
ATTENTION_TRIAL = "attention"
ATTENTION_SHARP = "(attention: sharp)"
ATTENTION_BLURRED = "(attention: blurred)"
#: Gaussian blur of the attention check's wrong side, as a fraction of the image's long side.
ATTENTION_BLUR = 1 / 60
#: Boxes of two states agree when their corners differ by less than this fraction of the width.
BOX_TOLERANCE = 1e-4


class StudyError(ChainZoomError):
    """A study that cannot be built, served or reported (no common trials, a broken folder)."""


@dataclass(frozen=True)
class RunState:
    """One state of one run: what it shows (image, centre, magnification, box) and its file."""

    method: str
    image: str  # the input's SHA-256
    input: str  # the input's path, for the report
    center: tuple[float, float]
    magnification: float
    box: tuple[float, float, float, float]
    file: Path


def parse_runs(specs: Sequence[str]) -> dict[str, Path]:
    """``DIR`` or ``NAME=DIR`` per method -> {name: folder}; names default to the folder's name."""
    methods: dict[str, Path] = {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        if not sep or not name or "/" in name:
            name, folder = Path(spec).name, spec
        if not Path(folder).is_dir():
            raise OptionError("runs", f"{folder} is not a folder")
        if name in methods:
            raise OptionError("runs", f"two folders are both named {name!r}; name them with NAME=DIR")
        if name.startswith("("):
            raise OptionError("runs", f"method names may not start with '(' (reserved), got {name!r}")
        methods[name] = Path(folder)
    if len(methods) < 2:
        raise OptionError("runs", f"a pairwise study needs at least two methods, got {len(methods)}")
    return methods


def run_folders(folder: Path) -> list[Path]:
    """The run folders of one method: the folder itself, or its subfolders that hold a manifest."""
    if (folder / MANIFEST).is_file():
        return [folder]
    found = sorted(p.parent for p in folder.glob(f"*/{MANIFEST}"))
    if not found:
        raise StudyError(f"{folder} holds no chainzoom run (no {MANIFEST} in it or in its subfolders)")
    return found


def read_states(method: str, folder: Path) -> list[RunState]:
    """Every state of a finished local-zoom run, with what identifies it across methods."""
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StudyError(f"{path} is unreadable ({exc})") from None
    problem = check_manifest(manifest)
    if problem:
        raise StudyError(f"{path} is not a chainzoom manifest ({problem})")
    if "states" not in manifest:
        raise StudyError(f"{folder} is a full-image run; a study compares local zoom runs")
    if not manifest.get("complete"):
        raise StudyError(f"{folder} is an unfinished run; finish it (rerun its command) or leave it out")
    request = manifest["request"]
    image = request.get("input_sha256")
    center = request.get("center")
    if not isinstance(image, str) or not (isinstance(center, list) and len(center) == 2):
        raise StudyError(f"{path} does not say which input and centre it zoomed (no input_sha256 or center)")
    states = []
    for record in manifest["states"]:
        file = folder / record["file"]
        if not file.is_file() or Path(record["file"]).name != record["file"]:
            raise StudyError(f"{folder}: state {record['index']}'s file {record['file']} is missing")
        states.append(
            RunState(
                method,
                image,
                str(manifest.get("input", "")),
                (float(center[0]), float(center[1])),
                float(record["magnification"]),
                tuple(float(v) for v in record["box"]),  # type: ignore[arg-type]
                file,
            )
        )
    return states


def _same_region(a: RunState, b: RunState) -> bool:
    width = max(a.box[2] - a.box[0], 1e-9)
    return all(abs(x - y) <= BOX_TOLERANCE * width for x, y in zip(a.box, b.box)) and (
        abs(a.magnification - b.magnification) <= 1e-6 * a.magnification
    )


def build_trials(methods: dict[str, list[RunState]]) -> list[dict[str, Any]]:
    """One trial per pair of methods per state both have (same input, centre, magnification, box).

    Pure: no file is read or written (files are compared by their SHA-256 later).
    """
    trials: list[dict[str, Any]] = []
    for first, second in combinations(methods, 2):
        for a in methods[first]:
            if a.magnification <= 1:
                continue
            match = next(
                (b for b in methods[second] if b.image == a.image and b.center == a.center and _same_region(a, b)),
                None,
            )
            if match is None:
                continue
            trials.append(
                {
                    "id": f"t{len(trials) + 1:03d}",
                    "image": a.image,
                    "input": a.input,
                    "magnification": a.magnification,
                    "box": list(a.box),
                    "a": {"method": first, "source": str(a.file)},
                    "b": {"method": second, "source": str(match.file)},
                }
            )
    return trials


def create_study(runs: dict[str, Path], out: Path, seed: int | None = None) -> dict[str, Any]:
    """Build the study in ``out`` (a new or empty folder) and return its ``study.json``.

    Everything is checked before anything is written; ``study.json`` is written last
    (atomically), so a folder without it is no study and can be made again.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OptionError("out", f"{out} exists and is not an empty folder; a study is made in a new one")
    states = {
        name: [s for folder in run_folders(path) for s in read_states(name, folder)] for name, path in runs.items()
    }
    trials = build_trials(states)
    digests = {t[side]["source"]: file_sha256(t[side]["source"]) for t in trials for side in ("a", "b")}
    identical = [t for t in trials if digests[t["a"]["source"]] == digests[t["b"]["source"]]]
    trials = [t for t in trials if t not in identical]
    if not trials:
        why = f" ({len(identical)} pairs of identical images left out)" if identical else ""
        raise StudyError(
            f"the runs of {', '.join(runs)} share no image at the same magnification and centre{why}; "
            "zoom the same inputs with the same --scale and --center for each method"
        )
    images = out / IMAGES
    images.mkdir(parents=True, exist_ok=True)
    for source, digest in digests.items():
        target = images / f"{digest}{Path(source).suffix.lower()}"
        if not target.exists():
            atomic_write(target, partial(_copy, source))
    for trial in trials:
        for side in ("a", "b"):
            source = trial[side].pop("source")
            trial[side]["file"] = f"{IMAGES}/{digests[source]}{Path(source).suffix.lower()}"
            trial[side]["source"] = source
    trials.append(_attention_trial(trials[-1], images))
    study = {
        "chainzoom": __version__,
        "created": datetime.now(UTC).isoformat(),
        "question": "Which image shows more realistic, natural detail?",
        "methods": {name: str(path) for name, path in runs.items()},
        "secret": secrets.token_hex(16) if seed is None else f"seed-{seed}",
        "trials": trials,
        "left_out_identical": len(identical),
    }
    atomic_write_json(out / STUDY, study)
    return study


def _copy(source: str, target: Path) -> None:
    shutil.copyfile(source, target)


def _attention_trial(model: dict[str, Any], images: Path) -> dict[str, Any]:
    """A trial with a right answer: the deepest state of the last trial against a blurred copy."""
    from PIL import Image, ImageFilter

    sharp = images.parent / model["a"]["file"]
    with Image.open(sharp) as image:
        blurred = image.convert("RGB").filter(ImageFilter.GaussianBlur(max(image.size) * ATTENTION_BLUR))
    target = images / f"attention-{sharp.stem[:16]}.png"
    atomic_write(target, lambda tmp: blurred.save(tmp, format="PNG"))
    return {
        "id": ATTENTION_TRIAL,
        "attention": True,
        "image": model["image"],
        "input": model["input"],
        "magnification": model["magnification"],
        "box": model["box"],
        "a": {"method": ATTENTION_SHARP, "file": model["a"]["file"]},
        "b": {"method": ATTENTION_BLURRED, "file": f"{IMAGES}/{target.name}"},
        "expected": ATTENTION_SHARP,
    }


def load_study(folder: Path) -> dict[str, Any]:
    """A study folder's ``study.json``, checked enough to serve and report from."""
    path = Path(folder) / STUDY
    if not path.is_file():
        raise StudyError(f"{folder} is no study (no {STUDY}); make one with chainzoom study create")
    try:
        study = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StudyError(f"{path} is unreadable ({exc})") from None
    if not isinstance(study, dict) or not isinstance(study.get("trials"), list) or not study["trials"]:
        raise StudyError(f"{path} holds no trials")
    return study
