"""The ``orient`` command line: one module per command group, all registered on one typer app."""

from . import kuranet as _kuranet  # noqa: F401
from . import precompute, quickstart, reproduce, train  # noqa: F401  (register their commands)
from .main import app, main

__all__ = ["app", "main"]
