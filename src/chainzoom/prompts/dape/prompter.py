"""The ``dape`` prompter: the official Chain-of-Zoom default prompt, RAM/DAPE tags of the view.

What the official ``inference_coz.py --prompt_type dape`` does, step by step
(``official-coz.md`` §3 and §11), and what we do:

- the tagger sees the step's SR input only (our ``context.view``, float ``[0, 1]``), never
  the wider state;
- ``transforms.Resize((384, 384))`` on a tensor (bilinear, antialiased, aspect not kept),
  then ImageNet mean/std normalisation, on the model's device, then the model's dtype;
- a tag fires when ``sigmoid(logit) > its threshold``: RAM's per-tag thresholds
  (``ram_tag_list_threshold.txt``, compared in float32 as RAM keeps them); fired tags in
  tag-list order, joined with ", "; no tag is deleted;
- the prompt is the tags, or ``"{tags}, {text},"`` with the user's text.

The official code runs DAPE in fp16 on a GPU (``--mixed_precision fp16``); ``dtype=float16``
does the same here, float32 is the default (and the only choice on a CPU).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from chainzoom.errors import ChainZoomError, ModelError
from chainzoom.io.digest import file_sha256
from chainzoom.prompts.base import PromptContext, Prompter
from chainzoom.prompts.dape.checkpoint import load_tagger
from chainzoom.prompts.dape.tagging import RamTagger
from chainzoom.prompts.message import join_user_text
from chainzoom.prompts.options import Options
from chainzoom.runtime import Runtime, torch_dtype

#: torchvision's ImageNet statistics, which RAM's transform uses.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The name of RAM's per-tag thresholds, next to its tag list in ``ram/data/``.
THRESHOLDS_FILE = "ram_tag_list_threshold.txt"
#: RAM's ``threshold`` argument, the value of every tag without its own.
RAM_THRESHOLD = 0.68


def read_tag_list(path: str | os.PathLike[str]) -> list[str]:
    """One tag a line, as RAM reads it (``read().splitlines()``)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ModelError(f"dape: tags={file} does not exist")
    try:
        tags = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"dape: tags={file} cannot be read as UTF-8 text: {exc}") from None
    if not tags:
        raise ModelError(f"dape: tags={file} is empty")
    return tags


def read_thresholds(path: str | os.PathLike[str]) -> list[float]:
    """One number a line, as RAM reads ``ram_tag_list_threshold.txt``."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ModelError(f"dape: thresholds={file} does not exist")
    values = []
    with file.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            try:
                values.append(float(line.strip()))
            except ValueError:
                raise ModelError(f"dape: thresholds={file} line {number} is not a number: {line.strip()!r}") from None
    return values


def tail_fingerprint(path: str | os.PathLike[str], tail: int = 1 << 20) -> str:
    """sha256 of a file's size and last MiB: for a torch.save zip, its directory with every tensor's CRC-32.

    Hashing all of RAM's several GB would cost seconds at every start; the zip directory
    changes with any tensor, so it identifies the weights for manifests and prompt caches.
    """
    size = os.path.getsize(path)
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as handle:
        handle.seek(max(0, size - tail))
        digest.update(handle.read())
    return digest.hexdigest()


class DapePrompter(Prompter):
    """RAM (with DAPE's LoRA) tags of the zoomed view, joined with ", "."""

    id = "dape"

    def __init__(
        self,
        ram: str,
        *,
        dape: str | None,
        tags: str,
        thresholds: str | None,
        threshold: float | None,
        text: str | None = None,
        device: str = "cpu",
        dtype: str = "float32",
        image_size: int = 384,
        window: int = 12,
        heads: int = 4,
    ) -> None:
        self.ram = str(Path(ram).expanduser())
        self.dape = str(Path(dape).expanduser()) if dape else None
        self.tags_path = str(Path(tags).expanduser())
        self.thresholds_path = str(Path(thresholds).expanduser()) if thresholds else None
        self.threshold = threshold
        self.text = text
        self.device = device
        self.dtype = dtype
        self.image_size = image_size
        self.window = window
        self.heads = heads
        self.tag_list = read_tag_list(tags)
        self._digests = {
            "ram_fingerprint": tail_fingerprint(self.ram) if Path(self.ram).is_file() else None,
            "dape_sha256": file_sha256(self.dape) if self.dape and Path(self.dape).is_file() else None,
            "tags_sha256": file_sha256(self.tags_path),
            "thresholds_sha256": file_sha256(self.thresholds_path) if self.thresholds_path else None,
        }
        self.model: RamTagger | None = None
        self.lora_counts: dict[str, int] = {}
        self.class_thresholds = torch.empty(0)

    def settings(self) -> dict:
        return {
            "id": self.id,
            "ram": self.ram,
            "dape": self.dape,
            **self._digests,
            "tags": self.tags_path,
            "thresholds": self.thresholds_path,
            "threshold": self.threshold,
            "image_size": self.image_size,
            "window": self.window,
            "heads": self.heads,
            "text": self.text,
            "dtype": self.dtype,
            "device": torch.device(self.device).type,
        }

    def load(self) -> RamTagger:
        """Read RAM (and DAPE) once, check the tag list and thresholds against the model."""
        if self.model is None:
            model, self.lora_counts = load_tagger(
                self.ram, self.dape, image_size=self.image_size, window=self.window, head_heads=self.heads
            )
            classes = model.config.head.num_classes
            if len(self.tag_list) != classes:
                raise ModelError(
                    f"dape: tags={self.tags_path} has {len(self.tag_list)} tags, the checkpoint's tagging head "
                    f"has {classes}"
                )
            if self.thresholds_path is not None:
                values = read_thresholds(self.thresholds_path)
                if len(values) != classes:
                    raise ModelError(
                        f"dape: thresholds={self.thresholds_path} has {len(values)} lines, the tag list has {classes}"
                    )
                self.class_thresholds = torch.tensor(values, dtype=torch.float32)
            else:
                assert self.threshold is not None
                self.class_thresholds = torch.full((classes,), self.threshold, dtype=torch.float32)
            self.model = model.to(device=self.device, dtype=torch_dtype(self.dtype))
        return self.model

    def pixels(self, image: torch.Tensor) -> torch.Tensor:
        """RAM's input for a ``[3, H, W]`` view in ``[0, 1]``: 384x384, ImageNet-normalised."""
        size = self.image_size
        batch = image.detach().float().unsqueeze(0).to(self.device)
        batch = F.interpolate(batch, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        mean = torch.tensor(IMAGENET_MEAN, device=batch.device).view(-1, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=batch.device).view(-1, 1, 1)
        return ((batch - mean) / std).to(torch_dtype(self.dtype))

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        """The ``[num_tags]`` logits of one view, in the model's dtype."""
        model = self.load()
        with torch.inference_mode():
            return model(self.pixels(image))[0]

    def tags(self, image: torch.Tensor) -> list[str]:
        """The fired tags of one view, in tag-list order."""
        probabilities = torch.sigmoid(self.logits(image))
        fired = probabilities > self.class_thresholds.to(probabilities.device)
        return [self.tag_list[index] for index in fired.nonzero().flatten().tolist()]

    def describe(self, context: PromptContext) -> str:
        return join_user_text(", ".join(self.tags(context.view)), self.text)


def create_dape(argument: str | None, runtime: Runtime, **options: Any) -> DapePrompter:
    """``dape:RAM_PTH,dape=DAPE_PTH,tags=TAG_LIST[,thresholds=FILE|threshold=P,text=T,device=D,dtype=D,...]``."""
    ram, opts = Options.parse("dape", argument, options)
    if not ram:
        raise ChainZoomError("dape: name RAM's checkpoint first: dape:ram_swin_large_14m.pth,dape=DAPE.pth,tags=...")
    dape = opts.text("dape")
    tags = opts.text("tags")
    thresholds = opts.text("thresholds")
    threshold = opts.number("threshold", None, minimum=0.0)
    device = opts.text("device", runtime.device)
    dtype = opts.text("dtype", "float32")
    settings: dict[str, Any] = dict(
        text=opts.text("text"),
        image_size=opts.integer("image_size", 384, minimum=1),
        window=opts.integer("window", 12, minimum=1),
        heads=opts.integer("heads", 4, minimum=1),
    )
    opts.finish()
    if not Path(ram).expanduser().is_file():
        raise ModelError(f"dape: RAM checkpoint {Path(ram).expanduser()} does not exist")
    if dape is not None and not Path(dape).expanduser().is_file():
        raise ModelError(f"dape: dape={Path(dape).expanduser()} does not exist")
    if not tags:
        raise ChainZoomError("dape: tags= is required: RAM's tag list (ram/data/ram_tag_list.txt)")
    if thresholds is not None and threshold is not None:
        raise ChainZoomError("dape: give thresholds=FILE (one per tag) or threshold=P (for every tag), not both")
    if thresholds is None and threshold is None:
        beside = Path(tags).expanduser().parent / THRESHOLDS_FILE
        if not beside.is_file():
            raise ChainZoomError(
                f"dape: no per-tag thresholds: pass thresholds=FILE (RAM's {THRESHOLDS_FILE}, which the official "
                f"code uses) or threshold=P for one threshold for every tag (RAM's default is {RAM_THRESHOLD})"
            )
        thresholds = str(beside)
    if dtype not in ("float32", "float16", "bfloat16"):
        raise ChainZoomError(f"dape: dtype must be float32, float16 or bfloat16, got {dtype!r}")
    if dtype != "float32" and torch.device(device).type == "cpu":
        raise ChainZoomError(f"dape: dtype={dtype} is for GPUs; on the CPU use float32")
    prompter = DapePrompter(
        ram, dape=dape, tags=tags, thresholds=thresholds, threshold=threshold, device=device, dtype=dtype, **settings
    )
    prompter.load()
    return prompter
