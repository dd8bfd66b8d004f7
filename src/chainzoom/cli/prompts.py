"""``chainzoom prompts``: the prompts a zoom would use, optionally scored by the alignment rewards.

Step 1's prompt needs no backbone (state 0 and the first crop), but every later prompt
looks at the previous state, which only the backbone can make: so the chain runs with
``--backbone`` (``bicubic`` gives a fast preview whose prompts differ from a real run's).
``--cache`` shares prompts with a later ``zoom`` of the same settings.
"""

from __future__ import annotations

import argparse
from typing import Any

from chainzoom.cli.flags import add_config_flags
from chainzoom.cli.parsing import add_config_source, config_from
from chainzoom.config import PromptsConfig


def add_parser(commands: argparse._SubParsersAction[Any]) -> None:
    parser = commands.add_parser(
        "prompts",
        help="show the prompts a zoom would use",
        description="Run the chain with --backbone (states after the first need it) and print each step's prompt.",
    )
    add_config_flags(parser, PromptsConfig)
    add_config_source(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from chainzoom.api import ChainZoom
    from chainzoom.errors import OptionError
    from chainzoom.prompts.cache import CachedPrompter
    from chainzoom.prompts.message import context_images
    from chainzoom.prompts.recording import RecordingPrompter

    config = config_from(args, PromptsConfig)
    if not config.input:
        raise OptionError("input", "name an image file")
    models = ChainZoom.from_config(config).load()
    prompter = models.prompter
    if config.cache is not None:
        prompter = CachedPrompter(prompter, config.cache)
    recording = RecordingPrompter(prompter)
    preview = ChainZoom(models.backbone, recording, runtime=config.runtime)
    states = [s for s in preview(config.input, config.scale, config.center, view=config.view) if s.index > 0]
    prompts = [s.prompt or "" for s in states]
    if config.score:
        from chainzoom.align.session import format_scores, score_prompts_with

        pairs = [(images[0], images[1]) for images in map(context_images, recording.contexts)]
        rows = score_prompts_with(
            prompts, config.reward, pairs=pairs, critic=config.critic, phrases=config.phrases, runtime=models.runtime
        )
        print(format_scores(prompts, rows))
        return 0
    for state in states:
        print(f"step {state.index} (x{state.magnification:g}): {state.prompt}")
    return 0
