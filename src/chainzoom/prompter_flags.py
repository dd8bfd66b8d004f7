"""Turn the ``--prompter-*`` flags into options of the prompter the user named.

Only flags the user set are passed, so every prompter keeps its own defaults; a flag
given to a prompter that has no such option is an error, never silently ignored.
"""

from __future__ import annotations

import argparse

from chainzoom.errors import ChainZoomError
from chainzoom.prompts import Prompter, create_prompter
from chainzoom.registry import Runtime, split_spec

#: Prompters that take no options at all.
PLAIN_PROMPTERS = ("null", "fixed")


def prompter_options(args: argparse.Namespace) -> dict:
    """The options the user's ``--prompter-*`` flags set, named as the prompter expects."""
    name = split_spec(args.prompter)[0]
    options: dict = {}
    if args.prompter_model is not None:
        options["model"] = args.prompter_model
    if args.prompter_adapter is not None:
        options["adapter"] = args.prompter_adapter
    if args.prompter_max_tokens is not None:
        options["max_tokens" if name == "openai" else "max_new_tokens"] = args.prompter_max_tokens
    if args.prompter_sample:
        options["sample"] = True
    if args.prompter_offload:
        options["offload"] = True
    if args.prompter_timeout is not None:
        options["timeout"] = args.prompter_timeout
    if args.prompt is not None:
        options["text"] = args.prompt
    if options and name in PLAIN_PROMPTERS:
        raise ChainZoomError(f"--prompter {name} takes no options (got {', '.join(sorted(options))})")
    return options


def build_prompter(args: argparse.Namespace, runtime: Runtime) -> Prompter:
    """The prompter ``--prompter`` names, with the ``--prompter-*`` options applied."""
    return create_prompter(args.prompter, runtime, **prompter_options(args))
