"""Which images a run folder holds and where each sits, as OpenSeadragon layers.

Positions are in viewport units where the input's width is 1, OpenSeadragon's own
convention, so a local-zoom state whose box is a quarter of the input's width is
placed at a quarter of the width, inside its parent: zooming in crosses from state
to state continuously. A full run's levels all cover the whole image; the deepest
is drawn on top, and the shallower ones show while its tiles load.
"""

from __future__ import annotations

import json
from pathlib import Path

from chainzoom.errors import ChainZoomError
from chainzoom.runs.manifest import MANIFEST, check_manifest

#: URL prefixes the server answers: run files as they are, and Deep Zoom made from TIFFs.
FILES = "/files/"
TIFF_DZI = "/tiff/"


def describe_run(folder: Path) -> dict:
    """The viewer's description of ``folder``: title, kind and the layers, shallowest first."""
    manifest = read_manifest(folder)
    if manifest.get("mode") == "full":
        layers = [_full_layer(level) for level in manifest.get("levels", [])]
        kind = "full"
    else:
        layers = _local_layers(manifest)
        kind = "local"
    if not layers:
        raise ChainZoomError(f"{folder} holds no finished image yet")
    title = Path(folder).resolve().name
    return {"title": title, "kind": kind, "complete": manifest.get("complete", False), "layers": layers}


def read_manifest(folder: Path) -> dict:
    """The manifest of a run folder, or a clear error when there is none."""
    path = Path(folder) / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ChainZoomError(f"{folder} holds no chainzoom run ({MANIFEST} is missing)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ChainZoomError(f"{path} is unreadable ({exc})") from None
    problem = check_manifest(data)
    if problem:
        raise ChainZoomError(f"{path} is not a chainzoom manifest ({problem})")
    return dict(data)


def tile_source(name: str) -> dict | str:
    """The OpenSeadragon tile source for a file of the run: DZI as is, TIFF as DZI, PNG whole."""
    suffix = Path(name).suffix.lower()
    if suffix == ".dzi":
        return FILES + name
    if suffix in (".tif", ".tiff"):
        return TIFF_DZI + Path(name).stem + ".dzi"
    return {"type": "image", "url": FILES + name}


def _full_layer(level: dict) -> dict:
    return {
        "label": f"x{level['magnification']:g}",
        "source": tile_source(level["file"]),
        "x": 0.0,
        "y": 0.0,
        "width": 1.0,
        "size": level["size"],
    }


def _local_layers(manifest: dict) -> list[dict]:
    try:
        input_width = manifest["plan"]["input_size"][0]
        states = manifest["states"]
    except (KeyError, IndexError, TypeError):
        raise ChainZoomError("manifest.json is not a chainzoom zoom run") from None
    layers = []
    for state in states:
        x0, y0, x1, _ = state["box"]
        layers.append(
            {
                "label": f"x{state['magnification']:g}",
                "source": tile_source(state["file"]),
                "x": x0 / input_width,
                "y": y0 / input_width,
                "width": (x1 - x0) / input_width,
                "prompt": state.get("prompt"),
            }
        )
    return layers
