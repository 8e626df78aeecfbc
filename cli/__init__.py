"""The ``orient`` command line: one module per command group, all registered on one typer app."""

from . import kuranet, precompute, quickstart, reproduce, train  # noqa: F401  (register commands)
from .main import app, main

__all__ = ["app", "main"]
