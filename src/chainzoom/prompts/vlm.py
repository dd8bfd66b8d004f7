"""The paper's prompter: a local transformers vision-language model writes each step's prompt.

``vlm:Qwen/Qwen2.5-VL-3B-Instruct`` (the default, the paper's model), ``vlm:/local/folder``
or any image-text-to-text chat checkpoint. What it is shown and how its answer is used
follow the official code (see :mod:`.message`): the official system message, the
previous state and the zoomed view as two images in that order at the view size
(512x512 officially; the Qwen processor then resizes each to 504x504, 324 visual
tokens), up to ``max_new_tokens`` (official 32) new tokens, decoded with
``skip_special_tokens=True, clean_up_tokenization_spaces=False``, keeping only the new
tokens. Beyond the official code:

- we strip whitespace at both ends of the answer (the official code keeps it; it only
  ever adds blanks or a newline around the words);
- decoding is greedy by default (``do_sample=False``; the model's other generation
  settings such as Qwen's ``repetition_penalty=1.05`` still apply). Qwen's own
  ``generation_config`` samples with ``top_k=1``, which is effectively greedy too, but
  we say so explicitly. ``sample=true`` samples with ``temperature``/``top_p``/``top_k``
  given here (defaults 1.0 / 1.0 / off, not the model's ``top_k=1``), seeded from the
  run's seed and the step, so a run repeats and a resumed run asks the same question
  with the same seed;
- the weights load only when the first prompt is needed, so a run whose prompts are all
  in the prompt cache never loads them; a missing model is still reported at once;
- ``offload=true`` keeps the model on the CPU and moves it to the device only while it
  generates (the official ``--efficient_memory`` mode, without its crash on
  accelerate-dispatched models).
"""

from __future__ import annotations

import copy
import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch

from chainzoom.core.vocabulary import DEFAULT_VLM
from chainzoom.errors import ChainZoomError, one_line
from chainzoom.memory import Placement
from chainzoom.prompts.base import PromptContext, Prompter
from chainzoom.prompts.message import (
    CONTEXTS,
    OFFICIAL_MAX_NEW_TOKENS,
    context_images,
    join_user_text,
    step_seed,
)
from chainzoom.prompts.options import Options
from chainzoom.prompts.vlm_adapter import adapter_digest
from chainzoom.runtime import DTYPES, Runtime, torch_dtype

DEFAULT_MODEL = DEFAULT_VLM


def paper_messages(context: str = "multiscale") -> list[dict[str, Any]]:
    """The official chat: the system instruction, then a user turn of the images and no text."""
    images = 1 if context == "single" else 2
    return [
        {"role": "system", "content": CONTEXTS[context]},
        {"role": "user", "content": [{"type": "image"}] * images},
    ]


class VLMPrompter(Prompter):
    """Asks a transformers chat VLM about [previous state, zoomed view]."""

    id = "vlm"

    def __init__(
        self,
        source: str,
        *,
        adapter: str | None = None,
        max_new_tokens: int = OFFICIAL_MAX_NEW_TOKENS,
        sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        seed: int = 0,
        text: str | None = None,
        device: str = "cpu",
        dtype: str = "float32",
        offload: bool = False,
        context: str = "multiscale",
    ) -> None:
        self.source = source
        self.adapter = adapter
        self.adapter_sha256 = adapter_digest(adapter) if adapter else None
        self.max_new_tokens = max_new_tokens
        self.sample = sample
        self.temperature, self.top_p, self.top_k = temperature, top_p, top_k
        self.seed = seed
        self.text = text
        self.device = device
        self.dtype = dtype
        self.offload = offload
        self.context = context
        self._loaded: tuple[Any, Any] | None = None
        self.placement: Placement | None = None

    def settings(self) -> dict:
        decoding: dict[str, Any] = {"mode": "greedy"}
        if self.sample:
            decoding = {
                "mode": "sample",
                "temperature": self.temperature,
                "top_p": self.top_p,
                "top_k": self.top_k,
                "seed": self.seed,
            }
        return {
            "id": self.id,
            "model": self.source,
            "adapter": self.adapter,
            "adapter_sha256": self.adapter_sha256,
            "message": CONTEXTS[self.context],
            "context": self.context,
            "max_new_tokens": self.max_new_tokens,
            "decoding": decoding,
            "text": self.text,
            "dtype": self.dtype,
            "device": torch.device(self.device).type,
        }

    def attach(self, placement: Placement) -> None:
        """Put the model under ``placement`` (shared with the SR backbone), as group ``vlm``.

        From then on the memory plan, not ``offload``, decides when the model leaves the device.
        """
        model, _ = self.load()
        placement.add("vlm", [model], resident=not self.offload)
        self.placement = placement

    def with_context(self, context: str) -> VLMPrompter:
        """This prompter showing ``context`` instead, sharing the loaded model (eval's context rows)."""
        if context not in CONTEXTS:
            raise ChainZoomError(f"vlm: context must be one of {', '.join(CONTEXTS)}, got {context!r}")
        self.load()
        other = copy.copy(self)
        other.context = context
        return other

    def load(self) -> tuple[Any, Any]:
        """Load (once) and return ``(model, processor)``; the adapter, if any, is merged."""
        if self._loaded is None:
            from transformers import AutoModelForImageTextToText

            from chainzoom.prompts.vlm_adapter import merge_adapter
            from chainzoom.prompts.vlm_processor import load_processor

            home = "cpu" if self.offload else self.device
            try:
                processor = load_processor(self.source)
                model = AutoModelForImageTextToText.from_pretrained(
                    self.source,
                    dtype="auto" if self.dtype == "auto" else torch_dtype(self.dtype),
                    device_map={"": home},
                )
            except ImportError as exc:
                raise ChainZoomError(f"vlm {self.source}: needs a missing package ({one_line(exc)})") from exc
            except OSError as exc:
                raise ChainZoomError(f"vlm {self.source}: cannot load it ({one_line(exc)})") from exc
            except ValueError as exc:
                raise ChainZoomError(
                    f"vlm {self.source}: not an image-text-to-text chat model ({one_line(exc)})"
                ) from exc
            if self.adapter:
                model = merge_adapter(model, self.adapter)
            self._loaded = (model.eval(), processor)
        return self._loaded

    def inputs(self, context: PromptContext) -> Any:
        """The processor's tensors for this context: chat text plus the two images, in order."""
        _, processor = self.load()
        chat = processor.apply_chat_template(paper_messages(self.context), tokenize=False, add_generation_prompt=True)
        images = context_images(context, self.context)
        return processor(text=[chat], images=images, padding=True, return_tensors="pt")

    def describe(self, context: PromptContext) -> str:
        model, processor = self.load()
        inputs = self.inputs(context)
        with self._placed(model) as device, torch.inference_mode(), self._seeded(context.step):
            inputs = inputs.to(device)
            output = model.generate(**inputs, **self._generation_options())
        new_tokens = output[:, inputs["input_ids"].shape[1] :].cpu()
        answer = processor.batch_decode(new_tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)[0]
        return join_user_text(answer.strip(), self.text)

    def _generation_options(self) -> dict[str, Any]:
        if not self.sample:
            return {"max_new_tokens": self.max_new_tokens, "do_sample": False}
        return {
            "max_new_tokens": self.max_new_tokens,
            "do_sample": True,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
        }

    @contextmanager
    def _placed(self, model: torch.nn.Module) -> Iterator[str]:
        """Yield the device to generate on; with offload, the model visits it only meanwhile."""
        if self.placement is not None:
            with self.placement.use("vlm"):
                yield self.device
            return
        if not self.offload:
            yield self.device
            return
        model.to(self.device)
        try:
            yield self.device
        finally:
            model.to("cpu")
            if torch.device(self.device).type == "cuda":
                torch.cuda.empty_cache()

    def _seeded(self, step: int):
        """When sampling: a private RNG state seeded from (run seed, step); greedy needs none."""
        if not self.sample:
            return nullcontext()
        return _seeded_rng(self.device, step_seed(self.seed, step))


@contextmanager
def _seeded_rng(device: str, seed: int) -> Iterator[None]:
    """Seed torch for one generation and restore the caller's RNG state afterwards."""
    kind = torch.device(device).type
    devices = [torch.device(device).index or 0] if kind == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type="cuda"):
        torch.manual_seed(seed)
        yield


def check_source(source: str) -> None:
    """Fail now, not after the first backbone step, when the model cannot be found.

    A source that exists on disk, or is written as a path, must be a model folder. A hub
    id is checked only when the hub is offline (``HF_HUB_OFFLINE=1``): then it must be
    in the local Hugging Face cache; online, ``from_pretrained`` downloads it.
    """
    path = Path(source).expanduser()
    if path.exists() or source.startswith(("/", "./", "../", "~", ".\\")):
        if not path.is_dir():
            raise ChainZoomError(f"vlm {source}: no such model folder")
        if not (path / "config.json").is_file():
            raise ChainZoomError(f"vlm {source}: not a transformers model folder (no config.json)")
        return
    from huggingface_hub import constants, try_to_load_from_cache

    if constants.HF_HUB_OFFLINE and not isinstance(try_to_load_from_cache(source, "config.json"), str):
        raise ChainZoomError(
            f"vlm {source}: not in the local Hugging Face cache and the hub is offline (HF_HUB_OFFLINE=1); "
            "download it where the hub is reachable, or name a local folder: --prompter vlm:/path/to/model"
        )


def create_vlm(argument: str | None, runtime: Runtime, **options: Any) -> VLMPrompter:
    """``vlm[:MODEL][,adapter=DIR,max_tokens=N,sample=BOOL,temperature=T,top_p=P,top_k=K,
    text=T,offload=BOOL,dtype=D,device=D]``; ``model=`` may name the model instead of the argument."""
    if importlib.util.find_spec("transformers") is None or importlib.util.find_spec("peft") is None:
        raise ChainZoomError(
            "prompter 'vlm' needs transformers and peft; install them with: pip install 'chainzoom[vlm]'"
        )
    target, opts = Options.parse("vlm", argument, options)
    named = opts.text("model")
    if target and named and target != named:
        raise ChainZoomError(f"vlm: two models named ({target!r} and model={named!r})")
    source = target or named or DEFAULT_MODEL
    adapter = opts.text("adapter")
    device = opts.text("device", runtime.device)
    # auto: the checkpoint's own dtype on a GPU (bf16 for Qwen2.5-VL, as the official code
    # loads it), float32 on a CPU, where half precision is several times slower
    dtype = opts.text("dtype", "auto")
    if dtype == "auto" and torch.device(device).type == "cpu":
        dtype = "float32"
    if dtype not in (*DTYPES, "auto"):
        raise ChainZoomError(f"vlm: dtype must be auto or one of {', '.join(DTYPES)}, got {dtype!r}")
    context = opts.text("context", "multiscale")
    if context not in CONTEXTS:
        raise ChainZoomError(f"vlm: context must be one of {', '.join(CONTEXTS)}, got {context!r}")
    decoding = opts.decoding(runtime.seed, temperature_minimum=1e-6)
    settings: dict[str, Any] = dict(
        adapter=str(Path(adapter).expanduser()) if adapter else None,
        max_new_tokens=decoding.pop("max_tokens"),
        **decoding,
        top_k=opts.integer("top_k", 0, minimum=0),
        device=device,
        dtype=dtype,
        offload=opts.flag("offload"),
        context=context,
    )
    opts.finish()
    check_source(source)
    return VLMPrompter(source, **settings)
