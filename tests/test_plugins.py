"""Plugins: a package installed beside chainzoom adds a backbone and a prompter by entry points."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .conftest import ROOT, SAMPLE

PLUGIN = '''
"""A third-party chainzoom plugin: a 4x backbone and a prompter, registered by entry points."""
from chainzoom.registry import BackboneEntry, BackboneFacts, PrompterEntry

BACKBONE = BackboneEntry(
    "boxy", "boxy_plugin.models:create_backbone", "box-filter 4x from a plugin",
    facts=BackboneFacts(licence="MIT", bytes_per_input_pixel=512),
)
PROMPTER = PrompterEntry("shout", "boxy_plugin.models:create_prompter", "a plugin prompter", argument="WORD")
WRONG = "not an entry"
'''

MODELS = """
import torch
from chainzoom.backbones.base import Backbone, ModelCard
from chainzoom.prompts.base import Prompter

class Boxy(Backbone):
    def upscale(self, image, prompt=""):
        return image.repeat_interleave(4, -1).repeat_interleave(4, -2)

    def card(self):
        return ModelCard("boxy", "box-filter 4x", "repeat", 4, parameters=0, licence="MIT")

class Shout(Prompter):
    id = "shout"
    def __init__(self, word):
        self.word = word
    def describe(self, context):
        return f"{self.word.upper()} {context.step}"
    def settings(self):
        return {"id": self.id, "word": self.word}

def create_backbone(argument, runtime):
    return Boxy()

def create_prompter(argument, runtime):
    return Shout(argument or "hello")
"""

PYPROJECT = """
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "boxy-plugin"
version = "1.0"

[project.entry-points."chainzoom.backbones"]
boxy = "boxy_plugin:BACKBONE"
broken = "boxy_plugin:WRONG"

[project.entry-points."chainzoom.prompters"]
shout = "boxy_plugin:PROMPTER"
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The plugin built and installed by pip into a folder of its own (offline, no dependencies)."""
    root = tmp_path_factory.mktemp("plugin")
    package = root / "src" / "boxy_plugin"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    (package / "models.py").write_text(textwrap.dedent(MODELS))
    (root / "pyproject.toml").write_text(PYPROJECT)
    target = root / "site"
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--no-build-isolation"]
    subprocess.run([*command, "--target", str(target), str(root)], check=True, capture_output=True, timeout=300)
    return target


def chainzoom(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT / "src")])}
    return subprocess.run(
        [sys.executable, "-m", "chainzoom.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_models_lists_the_plugins_and_names_the_broken_one(site):
    listing = chainzoom(site, "models")
    assert listing.returncode == 0, listing.stderr
    assert "boxy\n      box-filter 4x from a plugin" in listing.stdout
    assert "shout[:WORD]" in listing.stdout
    assert "broken: unavailable plugin (boxy_plugin:WRONG is not a chainzoom BackboneEntry)" in listing.stdout


def test_a_plugin_backbone_and_prompter_zoom(site, tmp_path):
    out = tmp_path / "run"
    args = ["zoom", str(SAMPLE), "--scale", "16", "--view", "64", "--backbone", "boxy"]
    done = chainzoom(site, *args, "--prompter", "shout:cat", "--device", "cpu", "--quiet", "--out", str(out))
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["backbone"]["id"] == "boxy" and manifest["prompter"] == {"id": "shout", "word": "cat"}
    assert [s["prompt"] for s in manifest["states"]] == [None, "CAT 1", "CAT 2"]


def test_a_broken_plugin_fails_only_when_named(site, tmp_path):
    done = chainzoom(site, "zoom", str(SAMPLE), "--backbone", "broken", "--out", str(tmp_path / "o"))
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "chainzoom: error: backbone plugin 'broken' is broken: boxy_plugin:WRONG is not a chainzoom BackboneEntry"
    )
    engine = chainzoom(
        site, "zoom", str(SAMPLE), "--backbone", "boxy", "--engine", "ncnn", "--out", str(tmp_path / "o")
    )
    assert "--engine: ncnn does not apply to backbone 'boxy' (engines: torch)" in engine.stderr
