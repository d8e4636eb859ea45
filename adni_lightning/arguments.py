"""Argument parsers that answer a mistake in one line: the error and, for an unknown option, the closest one.

jsonargparse prints the whole usage (80+ lines for ``fit``) before the line that matters, and argparse takes
a prefix of an option as the option (``--trainer.max_epoch`` ran as ``--trainer.max_epochs``). Both parsers here
accept only full option names.
"""

from __future__ import annotations

import difflib
import importlib
import re
import sys
from typing import Any, NoReturn

from jsonargparse import ArgumentParser
from lightning.pytorch.cli import LightningArgumentParser

_OPTION = re.compile(r"--[\w.\-]+")
_CALLABLE_UNKNOWN = re.compile(r'Parser key "([\w.]+)".*?Option \'(\w+)\' is not accepted.*?class_path=\'([\w.]+)\'')
_NESTED_UNKNOWN = re.compile(r'Parser key "([\w.]+)".*?class_path \'([\w.]+)\': unrecognized arguments: (--[\w.\-=]+)')


class ConciseErrors:
    """Mixin for a jsonargparse parser: no abbreviations, and errors as one line (plus a suggestion)."""

    def __init__(self, *args: Any, allow_abbrev: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, allow_abbrev=allow_abbrev, **kwargs)

    def explain(self, message: str) -> str:
        """``message`` in one line; an unknown option is named in full with the closest known one."""
        text = " ".join(line.strip() for line in message.strip().splitlines() if line.strip())
        nested = _NESTED_UNKNOWN.search(text)
        if nested:  # an unknown key inside a class given by class_path (data, model.image_encoder, ...)
            key, class_path, given = nested.groups()
            given = f"--{key}.{given[2:].split('=', 1)[0]}"
            known = [f"--{key}.{option[2:]}" for option in _class_options(class_path)]
        elif inside_callable := _CALLABLE_UNKNOWN.search(text):  # the same inside a callable (model.image_encoder)
            key, given, class_path = inside_callable.groups()
            given = f"--{key}.init_args.{given}"
            known = [f"--{key}.init_args.{option[2:]}" for option in _class_options(class_path)]
        elif "unrecognized arguments" in text:
            given = _OPTION.search(text.split("unrecognized arguments", 1)[1])
            given = given.group(0).split("=", 1)[0] if given else ""
            known = _options(self)
        else:
            return text
        close = difflib.get_close_matches(given, known, n=1, cutoff=0.6)
        return f"unknown option {given}" + (f"; did you mean {close[0]}?" if close else "")

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:  # jsonargparse tries alternatives internally and expects an exception
            super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        prog = parser.prog.replace(" [options]", "")
        sys.stderr.write(f"{prog}: error: {parser.explain(message)} (see --help)\n")
        sys.exit(2)


def _class_options(class_path: str) -> list[str]:
    """The options of ``class_path``'s constructor, as jsonargparse names them (``--loader.batch_size``)."""
    module, _, name = class_path.rpartition(".")
    parser = ArgumentParser(exit_on_error=False)
    try:
        parser.add_class_arguments(getattr(importlib.import_module(module), name), fail_untyped=False)
    except (ImportError, AttributeError, ValueError):
        return []
    return _options(parser)


def _options(parser: ArgumentParser) -> list[str]:
    """Every option string ``parser`` knows, nested groups included."""
    return [option for action in parser._actions for option in action.option_strings]


class CommandParser(ConciseErrors, ArgumentParser):
    """The parser of the project's own commands (``synth``, ``cv``, ...)."""


class CLIParser(ConciseErrors, LightningArgumentParser):
    """The parser of Lightning's ``fit``/``validate``/``test``/``predict``."""
