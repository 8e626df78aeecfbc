"""Entry point: a typer app whose commands live in small modules, one per command group."""

from __future__ import annotations

import sys

import typer

app = typer.Typer(
    name="orient",
    help="Score-based generative models with nonlinear forward chains, trained from precomputed caches.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


class UserError(Exception):
    """A problem with the user's input: reported as one line, exit code 2."""


def main() -> None:
    """Run the app; user errors become one line on stderr and a non-zero exit."""
    try:
        app()
    except (UserError, ValueError, FileNotFoundError) as exc:
        print(f"orient: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("orient: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
