"""Entry point: a typer app whose commands live in small modules, one per command group."""

from __future__ import annotations

import os
import sys
import warnings
from typing import Annotated

import typer
import typer.core

# Help is click's plain formatter, not rich panels: rich cut long defaults off at 80 columns
# ("synthetic-fingerprin…") and read "orient[metrics]" as a markup tag ("needs orient").
app = typer.Typer(
    name="orient",
    help="Score-based generative models with nonlinear forward chains, trained from precomputed caches.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
    context_settings={"max_content_width": 120},
)


def _conventional_usage(self: typer.core.TyperArgument) -> str:
    """An argument in a usage line as click and man pages write it: STORE, [STORE], STORE...
    (typer 0.29 writes a required argument as ``{store}``, which reads like a set or a template)."""
    name = self.display_name_raw.upper()
    if not self.required:
        name = f"[{name}]"
    return f"{name}..." if self.nargs != 1 else name


if hasattr(typer.core.TyperArgument, "_usage_display_name"):
    typer.core.TyperArgument._usage_display_name = _conventional_usage


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"orient {version('orient')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Score-based generative models with nonlinear forward chains, trained from precomputed caches."""


class UserError(Exception):
    """A problem with the user's input: reported as one line, exit code 2."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM, with what the user should know (e.g. that the work so far is kept):
    exit code 130 for SIGINT, 143 for SIGTERM (128 + the signal's number)."""

    def __init__(self, message: str, code: int = 130) -> None:
        super().__init__(message)
        self.code = code


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
        raise SystemExit(exc.code) from None
    except KeyboardInterrupt:
        print("\norient: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as exc:  # training stopped by a signal in a command that did not say more
        trainer = sys.modules.get("orient.trainer.train")
        if trainer is None or not isinstance(exc, trainer.TrainingInterrupted):
            raise
        print(f"\norient: interrupted: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    except SystemExit as exc:
        if exc.code == 130:  # typer turns Ctrl-C (KeyboardInterrupt) into a silent exit 130
            print("\norient: interrupted", file=sys.stderr)
        raise
