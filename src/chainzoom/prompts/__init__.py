"""Prompters: everything that can write a step's prompt, with its facts.

Add a family by adding a module and one ``PROMPTERS.register`` entry (or, from another
package, an entry point in the ``chainzoom.prompters`` group); the module is imported
only when a user picks it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chainzoom.registry import PrompterEntry, PrompterFacts, Registry
from chainzoom.runtime import Runtime

if TYPE_CHECKING:
    from chainzoom.prompts.base import Prompter

#: Options every model-based prompter takes as keywords (from flags, configs or the API).
_DECODING = ("max_tokens", "sample", "temperature", "top_p", "seed", "text")

PROMPTERS: Registry[Prompter, PrompterEntry] = Registry("prompter", "chainzoom.prompters", PrompterEntry)
PROMPTERS.register(PrompterEntry("null", "chainzoom.prompts.simple:create_null", "no prompt (the paper's null row)"))
PROMPTERS.register(
    PrompterEntry(
        "fixed",
        "chainzoom.prompts.simple:create_fixed",
        'the same text at every step: fixed:"a cat on a sofa"',
        argument="TEXT",
        required=True,
    )
)
PROMPTERS.register(
    PrompterEntry(
        "vlm",
        "chainzoom.prompts.vlm:create_vlm",
        "a local vision-language model writes each prompt from the last two states (the paper's; "
        "default Qwen/Qwen2.5-VL-3B-Instruct)",
        argument="ID_OR_FOLDER[,adapter=LORA_DIR,...]",
        extra="vlm",
        facts=PrompterFacts(
            options=("model", "adapter", *_DECODING, "top_k", "device", "dtype", "offload", "context"),
            uses_model=True,
            licence="the model's",
        ),
    )
)
PROMPTERS.register(
    PrompterEntry(
        "openai",
        "chainzoom.prompts.openai:create_openai",
        "an OpenAI-compatible chat server (vLLM, llama.cpp, Ollama, LM Studio) writes each prompt",
        argument="URL,model=NAME",
        required=True,
        facts=PrompterFacts(
            options=("model", *_DECODING, "timeout", "retries", "backoff", "key_env"),
            uses_model=True,
            licence="the served model's",
        ),
    )
)
PROMPTERS.register(
    PrompterEntry(
        "labels",
        "chainzoom.prompts.labels:create_labels",
        "offline ImageNet tags of the view from a bundled EfficientNet-Lite0 (a DAPE-tag stand-in)",
        argument="top=N,min_prob=P",
        extra="labels",
        facts=PrompterFacts(options=("text", "top", "min_prob", "device"), uses_model=True, licence="Apache-2.0"),
    )
)

PROMPTERS.register(
    PrompterEntry(
        "dape",
        "chainzoom.prompts.dape.prompter:create_dape",
        "RAM tags of the view with DAPE's LoRA (the official default prompt), from the official "
        "ram_swin_large_14m.pth, DAPE.pth and tag list",
        argument="RAM_PTH,dape=DAPE_PTH,tags=TAG_LIST",
        required=True,
        facts=PrompterFacts(
            options=(
                "text",
                "dape",
                "tags",
                "thresholds",
                "threshold",
                "device",
                "dtype",
                "image_size",
                "window",
                "heads",
            ),
            uses_model=True,
            licence="Apache-2.0 (RAM)",
        ),
    )
)


def create_prompter(spec: str, runtime: Runtime | None = None, **options: Any) -> Prompter:
    """Build a prompter from a spec string such as ``null`` or ``fixed:"text"``."""
    return PROMPTERS.create(spec, runtime, **options)


__all__ = ["PROMPTERS", "create_prompter"]
