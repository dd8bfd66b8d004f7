"""The prompt cache: a resumed run does not ask the prompt model again."""

from __future__ import annotations

import json

import pytest
import torch

from chainzoom.errors import ChainZoomError
from chainzoom.prompts.base import PromptContext, Prompter
from chainzoom.prompts.cache import CachedPrompter, image_digest


class CountingPrompter(Prompter):
    """Answers with a counter, so every real question is visible."""

    id = "counting"

    def __init__(self, model: str = "m1") -> None:
        self.model = model
        self.calls = 0

    def settings(self) -> dict:
        return {"id": self.id, "model": self.model}

    def describe(self, context: PromptContext) -> str:
        self.calls += 1
        return f"answer {self.calls} for step {context.step}"


def make_context(step: int = 1, seed: int = 0) -> PromptContext:
    generator = torch.Generator().manual_seed(seed)
    wide = torch.rand(3, 16, 16, generator=generator)
    return PromptContext(step, wide, torch.rand(3, 16, 16, generator=generator))


def test_second_ask_and_resumed_run_use_the_cache(tmp_path):
    path = tmp_path / "prompts.json"
    inner = CountingPrompter()
    cached = CachedPrompter(inner, path)
    first = cached.describe(make_context())
    assert cached.describe(make_context()) == first
    assert inner.calls == 1 and (cached.hits, cached.misses) == (1, 1)

    resumed_inner = CountingPrompter()
    resumed = CachedPrompter(resumed_inner, path)  # a new process reading the same run folder
    assert resumed.describe(make_context()) == first
    assert resumed_inner.calls == 0
    assert resumed.settings() == inner.settings() and resumed.id == "counting"


def test_anything_that_changes_the_question_misses(tmp_path):
    path = tmp_path / "prompts.json"
    base = CachedPrompter(CountingPrompter(), path)
    base.describe(make_context())
    other_model = CountingPrompter(model="m2")
    CachedPrompter(other_model, path).describe(make_context())
    assert other_model.calls == 1

    inner = CountingPrompter()
    cached = CachedPrompter(inner, path)
    cached.describe(make_context(step=2))
    changed = make_context()
    changed.view[0, 0, 0] = 1.0 - changed.view[0, 0, 0]
    cached.describe(changed)
    swapped = make_context()
    cached.describe(PromptContext(1, swapped.view, swapped.wide))
    assert inner.calls == 3


def test_images_are_keyed_by_their_8_bit_samples(tmp_path):
    context = make_context()
    wide = torch.round(context.wide * 255) / 255  # as the chain's states are: on the 8-bit grid
    context = PromptContext(1, wide, context.view)
    nudged = PromptContext(1, wide + 1e-4, context.view)  # float noise, same 8-bit image
    assert image_digest(nudged.wide) == image_digest(context.wide)
    inner = CountingPrompter()
    cached = CachedPrompter(inner, tmp_path / "prompts.json")
    cached.describe(context)
    cached.describe(nudged)
    assert inner.calls == 1
    assert image_digest(context.wide) != image_digest(context.wide.reshape(3, 8, 32))  # same bytes, other shape


def test_file_is_small_json_without_settings_or_temp_files(tmp_path):
    path = tmp_path / "prompts.json"
    cached = CachedPrompter(CountingPrompter(model="settings-stay-out"), path)
    cached.describe(make_context(1))
    cached.describe(make_context(2, seed=1))
    data = json.loads(path.read_text())
    assert data["version"] == 2
    assert sorted(entry["step"] for entry in data["prompts"].values()) == [1, 2]
    assert {entry["prompter"] for entry in data["prompts"].values()} == {"counting"}
    assert "settings-stay-out" not in path.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["prompts.json"]


@pytest.mark.parametrize(
    "content", ["{torn", '{"version": 99, "prompts": {}}', '{"version": 1, "prompts": {"k": {}}}', "[]"]
)
def test_damaged_cache_is_a_clear_error(tmp_path, content):
    path = tmp_path / "prompts.json"
    path.write_text(content)
    with pytest.raises(ChainZoomError, match="prompt cache .* is damaged.*delete it"):
        CachedPrompter(CountingPrompter(), path)
