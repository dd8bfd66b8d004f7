"""``chainzoom models --verbose``: build each backbone and print its card."""

from __future__ import annotations

from chainzoom.errors import ChainZoomError
from chainzoom.registry import Registry, Runtime


def print_backbone_cards(registry: Registry) -> None:
    """Load every backbone that needs no argument and show scale, size and licence.

    Backbones that need a file or a base model (``spandrel:PATH``) are listed by
    name only: there is nothing to load until the user names one.
    """
    print("\nBackbone cards:")
    for entry in registry.entries.values():
        if entry.needs_argument:
            print(f"  {entry.name}: needs an argument ({entry.name}:...)")
            continue
        try:
            card = registry.create(entry.name, Runtime()).card()
        except ChainZoomError as exc:
            print(f"  {entry.name}: unavailable ({exc})")
            continue
        params = f"{card.parameters:,}" if card.parameters is not None else "?"
        print(
            f"  {card.id}: x{card.scale}, {card.architecture}, {params} parameters, "
            f"licence {card.licence or 'n/a'}, reads prompt: {'yes' if card.text_aware else 'no'}"
        )
        if card.source:
            print(f"      source: {card.source}")
