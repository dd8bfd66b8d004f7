from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "assets" / "sample.jpg"

# An accidental model-hub download must fail fast, never hang a test.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def kill_after_states(process: subprocess.Popen, manifest: Path, count: int, timeout: float = 300) -> int:
    """SIGKILL ``process`` once its run's ``manifest`` lists ``count`` states; the states it had."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if manifest.exists() and len(json.loads(manifest.read_text())["states"]) >= count:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return len(json.loads(manifest.read_text())["states"])


@pytest.fixture(autouse=True)
def _run_from_repo_root(monkeypatch):
    """Tests name bundled assets relative to the repository root."""
    monkeypatch.chdir(ROOT)
