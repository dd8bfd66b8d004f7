"""What a run's manifest.json must hold, checked once wherever one is read (resuming, the viewer).

Kept free of heavy imports: the viewer reads manifests without torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

MANIFEST = "manifest.json"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


#: Per record kind, the keys that must be there and what each must be.
_STATE: dict[str, Callable[[Any], bool]] = {
    "index": lambda v: isinstance(v, int),
    "file": lambda v: isinstance(v, str),
    "box": lambda v: isinstance(v, list) and len(v) == 4 and all(_number(x) for x in v),
    "magnification": _number,
}
_LEVEL: dict[str, Callable[[Any], bool]] = {
    "file": lambda v: isinstance(v, str),
    "magnification": _number,
    "size": lambda v: isinstance(v, list) and len(v) == 2 and all(isinstance(x, int) for x in v),
}


def check_manifest(data: object) -> str | None:
    """What makes ``data`` no run manifest, or None: the parts that resuming and the viewer read."""
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not an object"
    if not isinstance(data.get("request"), dict):
        return "no request"
    for key, label, schema in (("states", "state", _STATE), ("levels", "level", _LEVEL)):
        records = data.get(key, [])
        if not isinstance(records, list):
            return f"{key} is not a list"
        for position, record in enumerate(records):
            if not isinstance(record, dict):
                return f"{label} {position} is not an object"
            for name, valid in schema.items():
                if not valid(record.get(name)):
                    return f"{label} {position} has no valid {name}"
    return None
