"""The critic: a second VLM rates how well a prompt describes the zoomed view.

The paper's critic is InternVL2.5-8B; any transformers image-text-to-text chat model
works (``--critic PATH|ID``), or a model served by an OpenAI-compatible server
(``--critic openai:URL,model=NAME``, through the openai prompter's HTTP client).
The critic sees what the policy saw, the previous state and the zoomed view in that
order, and the :data:`RATING_PROMPT` with the candidate prompt in it; it answers
with a number from 0 to 10, which :func:`parse_score` reads and maps to [0, 1].

Ratings are deterministic (greedy decoding, temperature 0) and cached by content
(:class:`ScoreCache`): GRPO often samples the same prompt several times for the same
pair (a short prompt, a converged policy), and a resumed run re-scores nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from chainzoom.align.rewards import ImagePair, Reward
from chainzoom.errors import ChainZoomError

#: What the critic is asked; ``{prompt}`` is the candidate prompt.
RATING_PROMPT = (
    "The second image is a zoom-in of the first image. A super-resolution model will use a text "
    "prompt to add detail to the second image. Rate how well this prompt describes what is really "
    "in the second image, using the first image as context: {prompt!r}\n"
    "Give 10 for an accurate, specific set of words; lower scores for things that are not visible, "
    "vague words, repeated words, or words about the images themselves (such as 'first image'). "
    "Answer with a single integer from 0 to 10."
)
TOP_SCORE = 10
_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?")
_OUT_OF = re.compile(r"\s*(?:/|out\s+of)\s*(\d+(?:\.\d+)?)", re.IGNORECASE)


def parse_score(answer: str, top: int = TOP_SCORE) -> float | None:
    """The first number in ``answer`` as a fraction of ``top``, or ``None`` if there is none usable.

    Accepts "7", "Score: 7", "**8**/10", "4 out of 5" (rescaled to its own top), "8.5".
    Out-of-range numbers ("12", "-1", "7/5") and answers without a number give
    ``None``: a wrong number is not evidence of a good or bad prompt.
    """
    match = _NUMBER.search(answer.replace("*", ""))
    if match is None:
        return None
    value = float(match.group(0))
    scale = float(top)
    out_of = _OUT_OF.match(answer.replace("*", ""), match.end())
    if out_of is not None:
        scale = float(out_of.group(1))
    if scale <= 0 or not 0.0 <= value <= scale:
        return None
    return value / scale


def rating_text(prompt: str) -> str:
    return RATING_PROMPT.format(prompt=prompt)


class Critic(ABC):
    """Answers the rating question for (pair, prompt) items; the answer is free text."""

    @abstractmethod
    def identity(self) -> dict:
        """What changes the answers (model, decoding): part of every cache key."""

    @abstractmethod
    def answer(self, items: Sequence[tuple[ImagePair, str]]) -> list[str]:
        """The raw answer for each item."""


class TransformersCritic(Critic):
    """A local transformers chat VLM, loaded on first use, decoding greedily."""

    def __init__(
        self, source: str, *, device: str = "cpu", dtype: torch.dtype | str = torch.float32, max_new_tokens: int = 8
    ) -> None:
        self.source, self.device, self.dtype, self.max_new_tokens = source, device, dtype, max_new_tokens
        self._loaded: tuple[Any, Any] | None = None

    def identity(self) -> dict:
        return {"critic": self.source, "max_new_tokens": self.max_new_tokens, "dtype": str(self.dtype)}

    def load(self) -> tuple[Any, Any]:
        if self._loaded is None:
            from chainzoom.align.trainer import load_vlm
            from chainzoom.prompts.vlm import check_source

            try:
                check_source(self.source)
            except ChainZoomError as exc:
                raise ChainZoomError(f"critic: {exc}") from None
            model, processor = load_vlm(self.source, self.device, self.dtype, role="critic")
            processor.tokenizer.padding_side = "left"
            self._loaded = (model.eval(), processor)
        return self._loaded

    def answer(self, items: Sequence[tuple[ImagePair, str]]) -> list[str]:
        model, processor = self.load()
        chats, images = [], []
        for (wide, view), prompt in items:
            messages = [
                {
                    "role": "user",
                    "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": rating_text(prompt)}],
                }
            ]
            chats.append(processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
            images.extend([wide, view])
        inputs = processor(text=chats, images=images, padding=True, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            output = model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        new = output[:, inputs["input_ids"].shape[1] :]
        return processor.batch_decode(new, skip_special_tokens=True)


class OpenAICritic(Critic):
    """A critic served over the OpenAI chat API, asked through the openai prompter's client."""

    def __init__(self, argument: str, max_tokens: int = 8) -> None:
        from chainzoom.prompts.openai import create_openai
        from chainzoom.runtime import Runtime

        self.client = create_openai(argument, Runtime())
        self.max_tokens = max_tokens

    def identity(self) -> dict:
        settings = self.client.settings()
        return {"critic": f"openai:{settings['url']}", "model": settings["model"], "max_tokens": self.max_tokens}

    def answer(self, items: Sequence[tuple[ImagePair, str]]) -> list[str]:
        from chainzoom.prompts.openai import answer_text, png_data_url

        answers = []
        for (wide, view), prompt in items:
            content = [{"type": "image_url", "image_url": {"url": png_data_url(image)}} for image in (wide, view)]
            content.append({"type": "text", "text": rating_text(prompt)})
            body = {
                "model": self.client.model,
                "messages": [{"role": "user", "content": content}],
                "max_tokens": self.max_tokens,
                "temperature": 0.0,
                "stream": False,
            }
            answers.append(answer_text(self.client._post(body), f"critic openai {self.identity()['critic']}"))
        return answers


class ScoreCache:
    """Critic scores by content, kept in memory and appended to a JSON-lines file.

    Appending one line per new score keeps the file valid after an interruption: a
    torn last line is skipped when the file is read back.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.scores: dict[str, float | None] = {}
        if path is not None and path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                    self.scores[entry["key"]] = entry["score"]
                except (ValueError, KeyError, TypeError):
                    continue

    def put(self, key: str, score: float | None) -> None:
        self.scores[key] = score
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as stream:
                stream.write(json.dumps({"key": key, "score": score}) + "\n")


def image_digest(image: Image.Image) -> str:
    rgb = image.convert("RGB")
    return hashlib.sha256(f"{rgb.size}".encode() + rgb.tobytes()).hexdigest()


class CriticReward(Reward):
    """The critic's rating in [0, 1]; an answer without a usable score counts 0."""

    name = "critic"
    metric_names = ("unusable",)

    def __init__(self, critic: Critic, cache: ScoreCache | None = None, batch: int = 8) -> None:
        self.critic = critic
        self.cache = cache or ScoreCache()
        self.batch = batch
        #: Share of the last call's prompts whose answer held no usable score: a critic
        #: that answers in words rather than numbers shows here, not as a silent 0.
        self.unusable = 0.0

    def key(self, pair: ImagePair, prompt: str) -> str:
        identity = json.dumps({**self.critic.identity(), "rating": RATING_PROMPT}, sort_keys=True)
        text = "\n".join([identity, image_digest(pair[0]), image_digest(pair[1]), prompt])
        return hashlib.sha256(text.encode()).hexdigest()

    def score(self, prompts: Sequence[str], pairs: Sequence[ImagePair] | None = None) -> list[float]:
        if pairs is None:
            raise ChainZoomError("the critic reward needs the image pair of each prompt")
        keys = [self.key(pair, prompt) for pair, prompt in zip(pairs, prompts, strict=True)]
        missing = {k: (pair, prompt) for k, pair, prompt in zip(keys, pairs, prompts) if k not in self.cache.scores}
        todo = list(missing.items())
        for start in range(0, len(todo), self.batch):
            chunk = todo[start : start + self.batch]
            for (key, _), answer in zip(chunk, self.critic.answer([item for _, item in chunk]), strict=True):
                self.cache.put(key, parse_score(answer))
        self.unusable = sum(self.cache.scores[k] is None for k in keys) / max(len(keys), 1)
        return [self.cache.scores[k] or 0.0 for k in keys]

    def metrics(self) -> dict[str, float]:
        return {"unusable": self.unusable}


def create_critic(spec: str, device: str = "cpu", dtype: torch.dtype | str = torch.float32) -> Critic:
    """``openai:URL,model=NAME`` or a transformers model folder / hub id."""
    if spec.startswith("openai:"):
        return OpenAICritic(spec.removeprefix("openai:"))
    return TransformersCritic(spec, device=device, dtype=dtype)
