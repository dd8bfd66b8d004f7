"""Content hashes of files: the identity of inputs and model weights in manifests."""

from __future__ import annotations

import hashlib
import os


def file_sha256(*paths: str | os.PathLike[str]) -> str:
    """SHA-256 over the bytes of ``paths`` in order, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
