"""Entry point: a typer app whose commands live in small modules, one per command group."""

from __future__ import annotations

import os
import sys
import warnings

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


class Interrupted(Exception):
    """Ctrl-C, with what the user should know (e.g. that the work so far is kept): exit code 130."""


def _one_line_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001
    """Warnings for users: one line, no source file and line number."""
    return f"orient: warning: {message}\n"


def main() -> None:
    """Run the app; user errors become one line on stderr and a non-zero exit.

    ORIENT_DEBUG=1 re-raises them with their traceback.
    """
    if not os.environ.get("ORIENT_DEBUG"):
        warnings.formatwarning = _one_line_warning
        warnings.simplefilter("once", RuntimeWarning)  # a process built twice warns once
    try:
        app()
    except (UserError, ValueError, FileNotFoundError, NotADirectoryError) as exc:
        if os.environ.get("ORIENT_DEBUG"):
            raise
        print(f"orient: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as exc:
        if os.environ.get("ORIENT_DEBUG"):
            raise
        where = f": {exc.filename}" if exc.filename else ""
        print(f"orient: error: {exc.strerror or exc}{where}", file=sys.stderr)
        raise SystemExit(1) from None
    except Interrupted as exc:
        print(f"\norient: interrupted: {exc}", file=sys.stderr)
        raise SystemExit(130) from None
    except KeyboardInterrupt:
        print("\norient: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except SystemExit as exc:
        if exc.code == 130:  # typer turns Ctrl-C (KeyboardInterrupt) into a silent exit 130
            print("\norient: interrupted", file=sys.stderr)
        raise
