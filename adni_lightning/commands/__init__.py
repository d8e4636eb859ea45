"""The project's own commands, one small module each, dispatched by ``python -m adni_lightning NAME``.

To add a command: write ``adni_lightning/commands/NAME.py`` with a module docstring (its first line is the
summary in ``--help``) and ``main(argv: list[str]) -> None`` built with jsonargparse, then list NAME here.
"""

from __future__ import annotations

import importlib

#: Command names, in the order ``--help`` lists them.
COMMANDS: tuple[str, ...] = ("synth", "inspect", "baseline", "cv", "interpret", "evaluate")


def _module(name: str):
    return importlib.import_module(f"adni_lightning.commands.{name}")


def summaries() -> dict[str, str]:
    """Command → the first line of its module docstring."""
    return {name: (_module(name).__doc__ or "").strip().splitlines()[0] for name in COMMANDS}


def run(name: str, argv: list[str]) -> None:
    """Run command ``name`` with its arguments."""
    _module(name).main(argv)
