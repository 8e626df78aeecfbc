"""The store's error type and how read errors are put in words: what the other stages need to
report a store's (or a cluster's) failure without importing the store itself."""

from __future__ import annotations

import json


class StoreError(ValueError):
    """A store that is missing, incomplete, corrupted or incompatible (one-line message)."""


def damage(exc: Exception) -> str:
    """What a read error says about a store's bytes, in a few words."""
    if isinstance(exc, json.JSONDecodeError):
        return f"unreadable metadata: {exc.msg}"
    if "checksum" in str(exc).lower():
        return "checksum mismatch"
    return str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
