from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "assets" / "sample.jpg"

# An accidental model-hub download must fail fast, never hang a test.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _run_from_repo_root(monkeypatch):
    """Tests name bundled assets relative to the repository root."""
    monkeypatch.chdir(ROOT)
