"""The project's own commands, one small module each, dispatched by ``python -m adni_lightning NAME``.

To add a command: write ``adni_lightning/commands/NAME.py`` with a module docstring (its first line is the
summary in ``--help``) and a function ``COMMAND`` whose signature declares its options (help from its docstring's
``Args:``; a first parameter ``run`` gets the :class:`~adni_lightning.run.Run` of ``--config`` and the run's
options), then list NAME here. A module with its own parser (``synth``) has ``parser()`` and ``main(argv)`` instead.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from adni_lightning.arguments import CommandParser
from adni_lightning.commands.options import command_parser, invoke

#: Command names, in the order ``--help`` lists them.
COMMANDS: tuple[str, ...] = ("synth", "inspect", "baseline", "cv", "tune", "interpret", "evaluate")


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"adni_lightning.commands.{name}")


def summaries() -> dict[str, str]:
    """Command → the first line of its module docstring."""
    return {name: (_module(name).__doc__ or "").strip().splitlines()[0] for name in COMMANDS}


def parser(name: str) -> CommandParser:
    """Command ``name``'s parser."""
    module = _module(name)
    if hasattr(module, "COMMAND"):
        return command_parser(name, module.__doc__ or "", module.COMMAND)
    return module.parser()


def run(name: str, argv: list[str]) -> None:
    """Run command ``name`` with its arguments."""
    module = _module(name)
    if hasattr(module, "COMMAND"):
        invoke(name, module.__doc__ or "", module.COMMAND, argv)
    else:
        module.main(argv)
