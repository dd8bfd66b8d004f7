"""``chainzoom prompts``: the prompts a zoom would use, optionally scored by the alignment rewards.

Step 1's prompt needs no backbone (state 0 and the first crop), but every later prompt
looks at the previous state, which only the backbone can make: so the chain runs with
``--backbone`` (``bicubic`` gives a fast preview whose prompts differ from a real run's).
``--cache`` shares prompts with a later ``zoom`` of the same settings.
"""

from __future__ import annotations

import argparse

from chainzoom.api import build_backbone
from chainzoom.core.geometry import default_view, parse_center, parse_view, plan_zoom
from chainzoom.io.images import load_image
from chainzoom.pipeline.chain import zoom_chain
from chainzoom.prompter_flags import build_prompter
from chainzoom.prompts.base import PromptContext, Prompter
from chainzoom.prompts.cache import CachedPrompter
from chainzoom.prompts.message import context_images
from chainzoom.runtime import resolve_runtime


class _Recording(Prompter):
    """Passes prompts through and keeps each step's context for scoring."""

    def __init__(self, inner: Prompter) -> None:
        self.inner = inner
        self.id = inner.id
        self.contexts: list[PromptContext] = []

    def describe(self, context: PromptContext) -> str:
        self.contexts.append(context)
        return self.inner.describe(context)

    def settings(self) -> dict:
        return self.inner.settings()


def run_prompts_command(args: argparse.Namespace) -> int:
    runtime = resolve_runtime(args.device, args.dtype, args.threads, args.seed)
    image = load_image(args.input)
    prompter = build_prompter(args, runtime)
    backbone = build_backbone(args.backbone, runtime)
    size, step = image.size, backbone.scale
    view = parse_view(args.view, size, step) if args.view else default_view(size, step)
    plan = plan_zoom(size, args.scale, parse_center(args.center, size), view, step)
    if args.cache is not None:
        prompter = CachedPrompter(prompter, args.cache)
    recording = _Recording(prompter)
    states = [s for s in zoom_chain(image, plan, backbone, recording) if s.index > 0]
    prompts = [s.prompt or "" for s in states]
    if args.score:
        from chainzoom.align.command import format_scores, score_prompts_with

        pairs = [context_images(c) for c in recording.contexts]
        rows = score_prompts_with(
            prompts, args.reward, pairs=pairs, critic=args.critic, phrases=args.phrases, runtime=runtime
        )
        print(format_scores(prompts, rows))
        return 0
    for state in states:
        print(f"step {state.index} (x{state.magnification:g}): {state.prompt}")
    return 0
