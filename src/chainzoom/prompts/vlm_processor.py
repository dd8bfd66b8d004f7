"""Load a chat VLM's processor without torchvision.

Why: transformers 5 builds Qwen2-VL / Qwen2.5-VL processors with a *video* processor
that exists only as a torchvision class, so ``AutoProcessor.from_pretrained`` raises
an ImportError on a machine without torchvision — and installing torchvision is not
an option here (an unpinned install replaces our pinned CPU torch with a multi-GB CUDA
build). A prompter never sends video, so we load the checkpoint's own processor class
minus its video processor: :func:`image_only` makes a subclass whose constructor has
no ``video_processor`` argument (transformers derives a processor's parts from its
constructor signature, so loading, calling and ``save_pretrained`` all follow), and
its image processor is the PIL implementation (``Qwen2VLImageProcessorPil`` for Qwen)
whenever the model has one — also where torchvision *is* installed, since the two
backends resize slightly differently and a prompt should not depend on whether some
other package happens to be present. The subclass keeps its parent's name, so a folder
it saves names the ordinary class and loads anywhere with ``AutoProcessor``.
"""

from __future__ import annotations

import inspect
from functools import cache
from typing import Any


@cache
def image_only(processor_class: type[Any]) -> type[Any]:
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


def processor_class_for(model_type: str) -> type:
    """The processor class transformers pairs with a model type."""
    import transformers
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    name = PROCESSOR_MAPPING_NAMES.get(model_type)
    return transformers.AutoProcessor if name is None else getattr(transformers, name)


def load_processor(source: str, **hub_kwargs: Any):
    """The checkpoint's processor, image-only, with the PIL image processor, from a folder or hub id."""
    from transformers import AutoConfig, AutoImageProcessor
    from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING_NAMES

    model_type = AutoConfig.from_pretrained(source, **hub_kwargs).model_type
    processor = image_only(processor_class_for(model_type)).from_pretrained(source, **hub_kwargs)
    backends = IMAGE_PROCESSOR_MAPPING_NAMES.get(model_type)
    current = getattr(processor, "image_processor", None)
    if isinstance(backends, dict) and "pil" in backends and type(current).__name__ != backends["pil"]:
        processor.image_processor = AutoImageProcessor.from_pretrained(source, backend="pil", **hub_kwargs)
    return processor
