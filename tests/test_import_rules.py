"""Stages do not reach into each other (issue 17): which package may import which.

The layering (docs/architecture.md, "Which package may import which"): ``dynamics``, ``storage``
and ``evaluation`` at the bottom, each importing no other orient package; ``pipeline`` and
``trainer`` above dynamics and storage (the trainer not the pipeline: ``orient train --recache``
hands it the pipeline's epoch writer); ``sampler`` above the trainer; ``kuranet`` on dynamics;
``reproduce`` and ``cli`` at the top.

Every ``import orient.<pkg>...``, ``from orient.<pkg> ...``, ``from orient import <pkg>`` and
relative import that leaves its package (``from ..<pkg> import ...``) is checked, at any depth of
a module (imports inside functions too).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

BOTTOM: frozenset[str] = frozenset()
ALLOWED: dict[str, frozenset[str]] = {
    "dynamics": BOTTOM,
    "storage": BOTTOM,
    "evaluation": BOTTOM,
    "pipeline": frozenset({"dynamics", "storage"}),
    "trainer": frozenset({"dynamics", "storage"}),
    "sampler": frozenset({"dynamics", "storage", "trainer"}),
    "kuranet": frozenset({"dynamics"}),
    "reproduce": frozenset(
        {"dynamics", "storage", "pipeline", "trainer", "sampler", "evaluation", "kuranet"}
    ),
    "cli": frozenset(
        {"dynamics", "storage", "pipeline", "trainer", "sampler", "evaluation", "kuranet"}
        | {"reproduce"}
    ),
}

# Imports that break the rules above today, each with why it is tolerated. Keep this list short:
# remove an entry when the import goes (the test below fails on an entry that no longer occurs).
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {
    # the sampler's progress line over the reverse steps is the pipeline's Progress class; it
    # belongs in a small shared module that every stage may import
    ("sampler/run.py", "pipeline"): "orient.pipeline.progress.Progress",
}


def _imported_packages(path: Path) -> set[str]:
    """The orient packages (first name below ``orient``) that ``path`` imports."""
    rel = path.relative_to(ROOT)
    parts = list(rel.with_suffix("").parts)
    package = parts[:-1]  # a module's package; __init__.py is its package's own module
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        targets: list[list[str]] = []
        if isinstance(node, ast.Import):
            targets = [alias.name.split(".") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = (node.module or "").split(".")
            else:
                up = len(package) - (node.level - 1)
                assert up >= 0, f"{rel}: relative import above the orient package"
                below = node.module.split(".") if node.module else []
                base = ["orient", *package[:up], *below]
            if base == ["orient"]:
                targets = [[*base, alias.name] for alias in node.names]  # from orient import pkg
            else:
                targets = [base]
        for t in targets:
            if len(t) >= 2 and t[0] == "orient" and t[1] in ALLOWED:
                out.add(t[1])
    return out


def _violations() -> dict[tuple[str, str], None]:
    found: dict[tuple[str, str], None] = {}
    for pkg, allowed in ALLOWED.items():
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for other in sorted(_imported_packages(path) - {pkg} - allowed):
                found[(path.relative_to(ROOT).as_posix(), other)] = None
    return found


def test_every_package_folder_is_checked():
    assert all((ROOT / pkg / "__init__.py").is_file() for pkg in ALLOWED)


def test_relative_imports_are_resolved():
    """The walk sees a relative import that leaves its package as the package it names."""
    found = _imported_packages(ROOT / "pipeline" / "verify.py")
    assert {"storage"} <= found and "pipeline" in found  # `from .blocks import ...`


def test_packages_import_only_the_layers_below_them():
    found = _violations()
    new = {k: v for k, v in found.items() if k not in KNOWN_EXCEPTIONS}
    assert not new, "imports that break the layering (docs/architecture.md): " + ", ".join(
        f"{f} imports orient.{p}" for f, p in new
    )


def test_known_exceptions_still_occur():
    """An exception that the code no longer needs is removed from the list."""
    found = _violations()
    gone = [k for k in KNOWN_EXCEPTIONS if k not in found]
    assert not gone, f"no longer imported, remove from KNOWN_EXCEPTIONS: {gone}"
