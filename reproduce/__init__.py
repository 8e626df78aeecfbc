"""``orient reproduce``: the papers' claims at laptop scale, our numbers beside the papers'.

One module per paper's experiments (``gou``, ``kuramoto_forward``, ``kuramoto_sgm``, ``spde``),
shared machinery in ``common`` (run folder, real pipeline), ``measures`` (pure statistics),
``figures`` (matplotlib, Agg), ``tables`` and ``paper`` (the papers' reference numbers).
Every experiment is ``run(Options) -> Report`` and writes results.json, results.md and PNGs.
"""

from __future__ import annotations

from collections.abc import Callable

from .common import Options, Report


def _gou_mog(opts: Options) -> Report:
    from .gou import run_mog

    return run_mog(opts)


def _gou_snp(opts: Options) -> Report:
    from .gou import run_snp

    return run_snp(opts)


def _kuramoto_forward(opts: Options) -> Report:
    from .kuramoto_forward import run

    return run(opts)


def _kuramoto_vs_sgm(opts: Options) -> Report:
    from .kuramoto_sgm import run

    return run(opts)


def _spde_forward(opts: Options) -> Report:
    from .spde import run_forward

    return run_forward(opts)


def _spde_generate(opts: Options) -> Report:
    from .spde import run_generate

    return run_generate(opts)


EXPERIMENTS: dict[str, Callable[[Options], Report]] = {
    "gou-mog": _gou_mog,
    "gou-snp": _gou_snp,
    "kuramoto-forward": _kuramoto_forward,
    "kuramoto-vs-sgm": _kuramoto_vs_sgm,
    "spde-forward": _spde_forward,
    "spde-generate": _spde_generate,
}

__all__ = ["EXPERIMENTS", "Options", "Report"]
