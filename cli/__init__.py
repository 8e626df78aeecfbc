"""The ``orient`` command line: one module per command group, all registered on one typer app."""

from . import precompute  # noqa: F401  (registers its commands)
from .main import app, main

__all__ = ["app", "main"]
