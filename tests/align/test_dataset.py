"""Training pairs from real zoom chains (bicubic backbone: no model), and the phrase file."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from chainzoom.align.dataset import PAIRS_INDEX, PairSettings, load_or_build_pairs, pair_images
from chainzoom.align.rewards import read_phrases
from chainzoom.errors import ChainZoomError
from chainzoom.runtime import Runtime


@pytest.fixture()
def images(tmp_path):
    rng = np.random.default_rng(1)
    paths = []
    for index, size in enumerate([(80, 60), (64, 64)]):
        path = tmp_path / f"{index}.png"
        Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype("uint8")).save(path)
        paths.append(str(path))
    return tuple(paths)


def test_pairs_are_the_chains_contexts_and_are_reused(images, tmp_path):
    settings = PairSettings(images, "bicubic", 64.0, None, 2, seed=3)
    folder = tmp_path / "pairs"
    records = load_or_build_pairs(settings, folder, Runtime(device="cpu"))
    assert len(records) == 2 * 2 * 3  # images x centres x steps (x4, x16, x64)
    assert [r.step for r in records[:3]] == [1, 2, 3]
    assert records[0].center == (0.5, 0.5) and records[3].center != (0.5, 0.5)
    for (wide, view), record in zip(pair_images(records, folder), records):
        assert wide.size == view.size  # the view is shown at the previous state's size
        assert wide.size == Image.open(record.source).size  # small inputs: the view is the input size

    index = folder / PAIRS_INDEX
    before = index.stat().st_mtime_ns
    assert load_or_build_pairs(settings, folder, Runtime(device="cpu")) == records  # a resumed run zooms nothing
    assert index.stat().st_mtime_ns == before
    other = PairSettings(images, "bicubic", 16.0, None, 1, seed=3)
    assert len(load_or_build_pairs(other, folder, Runtime(device="cpu"))) == 4  # other settings: built again (x4, x16)
    assert len(list(folder.glob("*.png"))) == 8  # and the old pairs are gone
    assert json.loads(index.read_text())["settings"]["scale"] == 16.0


def test_a_scale_without_a_step_is_refused(images, tmp_path):
    with pytest.raises(ChainZoomError, match="^scale: must be"):
        load_or_build_pairs(PairSettings(images, "bicubic", 1.0, None, 1, 0), tmp_path, Runtime(device="cpu"))


def test_phrase_file(tmp_path):
    path = tmp_path / "phrases.txt"
    path.write_text("# meta phrases\nfirst image\n\n  high quality  \n")
    assert read_phrases(path) == ["first image", "high quality"]
    with pytest.raises(ChainZoomError, match="cannot read"):
        read_phrases(tmp_path / "missing.txt")
