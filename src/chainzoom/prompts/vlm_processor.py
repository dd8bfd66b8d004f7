"""Load a chat VLM's processor without torchvision.

Why: transformers 5 builds Qwen2-VL / Qwen2.5-VL processors with a *video* processor
that exists only as a torchvision class, so ``AutoProcessor.from_pretrained`` raises
an ImportError on a machine without torchvision — and installing torchvision is not
an option here (an unpinned install replaces our pinned CPU torch with a multi-GB CUDA
build). A prompter never sends video, so we load the checkpoint's own processor class
minus its video processor: :func:`image_only` makes a subclass whose constructor has
no ``video_processor`` argument (transformers derives a processor's parts from its
constructor signature, so loading, calling and ``save_pretrained`` all follow), and
its image processor comes from ``AutoImageProcessor``, which falls back to the PIL
implementation (``Qwen2VLImageProcessorPil`` for Qwen) when torchvision is missing.
The subclass keeps its parent's name, so a folder it saves names the ordinary class
and loads anywhere with ``AutoProcessor``.
"""

from __future__ import annotations

import inspect
from functools import cache
from typing import Any


@cache
def image_only(processor_class: type) -> type:
    """``processor_class`` without its video processor (the class itself if it has none)."""
    if "video_processor" not in inspect.signature(processor_class.__init__).parameters:
        return processor_class

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        processor_class.__init__(
            self, image_processor, tokenizer, video_processor=None, chat_template=chat_template, **kwargs
        )

    return type(
        processor_class.__name__,
        (processor_class,),
        {
            "__init__": __init__,
            "__module__": __name__,
            "__qualname__": processor_class.__name__,
            "__doc__": f"{processor_class.__name__} without a video processor (no torchvision needed).",
        },
    )


def processor_class_for(source: str, **hub_kwargs: Any) -> type:
    """The processor class a checkpoint declares (through its config's model type)."""
    import transformers
    from transformers import AutoConfig
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    model_type = AutoConfig.from_pretrained(source, **hub_kwargs).model_type
    name = PROCESSOR_MAPPING_NAMES.get(model_type)
    if name is None:
        return transformers.AutoProcessor
    return getattr(transformers, name)


def load_processor(source: str, **hub_kwargs: Any):
    """The checkpoint's processor, image-only, loaded from a folder or a hub id."""
    processor_class = processor_class_for(source, **hub_kwargs)
    return image_only(processor_class).from_pretrained(source, **hub_kwargs)
