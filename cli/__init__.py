"""The ``orient`` command line: one module per command group, all registered on one typer app."""

from . import precompute, quickstart, train  # noqa: F401  (register their commands)
from .main import app, main

__all__ = ["app", "main"]
