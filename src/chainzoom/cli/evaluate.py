"""``chainzoom eval``: the paper's comparison (chain vs direct SR vs interpolation at x4...x256)
on a folder of images, as a report with tables, plots and sample grids.

The evaluation's config is saved as ``config.json`` in ``--out``; ``--rerun`` reads it
back, so a report can be made again from its folder alone.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

from chainzoom.cli.flags import add_config_flags, flag_name
from chainzoom.cli.parsing import add_config_source, file_layer, flags_of
from chainzoom.config import EXECUTOR_FIELDS, EvalConfig, from_mapping, merged, to_dict

CONFIG_FILE = "config.json"


def add_parser(commands: argparse._SubParsersAction[Any]) -> None:
    parser = commands.add_parser(
        "eval",
        help="compare chain, direct SR and interpolation on images: metrics, report, plots",
        description=(
            "Zoom into every image with every mode (resumable), score each magnification with "
            "no-reference metrics, fidelity to a downscaled original and drift across steps, "
            "and write results.csv, report.md, plots and sample grids into --out."
        ),
    )
    add_config_flags(parser, EvalConfig)
    add_config_source(parser, rerun=f"an evaluation's {CONFIG_FILE}: make the same evaluation again")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import json

    from chainzoom.errors import ConfigError
    from chainzoom.evaluation.harness import evaluate
    from chainzoom.evaluation.report import write_report
    from chainzoom.io.atomic import atomic_write_json
    from chainzoom.metrics.catalog import load_metrics, parse_metric_names
    from chainzoom.runs.progress import ZoomProgress

    layer, source = file_layer(args)
    if args.rerun is not None:
        try:
            layer, source = json.loads(Path(args.rerun).read_text(encoding="utf-8")), str(args.rerun)
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{args.rerun}: not a readable evaluation config ({exc})") from None
    config = from_mapping(EvalConfig, merged(layer, flags_of(args)), source)
    if config.executor == "ray":
        from chainzoom.runs.ray_loader import check_ray

        check_ray(config.ray_address)
    metrics, unavailable = load_metrics(parse_metric_names(",".join(config.metrics)), config.runtime.resolve().device)
    with ZoomProgress(enabled=not config.quiet) as progress:
        results = evaluate(config, metrics, unavailable, progress)
    atomic_write_json(Path(config.out) / CONFIG_FILE, to_dict(config))
    print(write_report(results, command_line(config)))
    return 0


def command_line(config: EvalConfig) -> str:
    """The evaluation's defining options as a command, for the report's header."""
    defaults = EvalConfig()
    parts = ["chainzoom", "eval", "--images", *config.images]
    for name, value in to_dict(config).items():
        if name in ("images", "quiet", "overwrite", "runtime", *EXECUTOR_FIELDS) or value == to_dict(defaults)[name]:
            continue
        flag = flag_name(name)
        if isinstance(value, bool):
            parts.append(flag)
        else:
            parts += [flag, ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    return shlex.join(parts)
