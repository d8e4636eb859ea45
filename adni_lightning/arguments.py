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
from types import UnionType
from typing import Any, NoReturn, Union, get_args, get_origin

from jsonargparse import ArgumentParser, Namespace
from lightning.pytorch.cli import LightningArgumentParser

_OPTION = re.compile(r"--[\w.\-]+")
_GROUP = re.compile(r'Parser key "([\w.]+)"')
_CLASS_PATH = re.compile(r"class_path[ =]'([\w.]+)'")
_UNKNOWN = re.compile(r"Option '([\w.]+)' is not accepted|unrecognized arguments: (--[\w.\-]+)")


class ConciseErrors(ArgumentParser):
    """A jsonargparse parser (both parsers here): no abbreviations, and errors as one line (plus a suggestion)."""

    def __init__(self, *args: Any, allow_abbrev: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, allow_abbrev=allow_abbrev, **kwargs)

    def explain(self, message: str) -> str:
        """``message`` in one line; an unknown option is named in full with the closest known one."""
        text = " ".join(line.strip() for line in message.strip().splitlines() if line.strip())
        unknown = _UNKNOWN.search(text)
        if unknown is None:
            return text
        groups = _GROUP.findall(text[: unknown.start()])
        name = (unknown.group(1) or unknown.group(2)).split("=", 1)[0]
        if not groups:  # an option of this parser
            given, known = name, _options(self, expand=True)
        elif len(groups) == 1 and (class_path := _CLASS_PATH.search(text)):
            # an unknown key inside a class given by class_path (data, model.image_encoder, ...)
            prefix = _group_prefix(groups[0])
            given = prefix + name.removeprefix("--")
            known = [prefix + option[2:] for option in _class_options(class_path.group(1))]
        else:  # inside a list of classes (data.augment): jsonargparse's own words
            return text
        close = _closest(given, known)
        return f"unknown option {given}" + (f"; did you mean {' or '.join(close)}?" if close else "")

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:  # jsonargparse tries alternatives internally and expects an exception
            super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        prog = parser.prog.replace(" [options]", "")
        sys.stderr.write(f"{prog}: error: {parser.explain(message)} (see --help)\n")
        sys.exit(2)


def _closest(given: str, known: list[str]) -> list[str]:
    """The options ``given`` most likely meant: those with its last component under the same group (a key that
    moved into a group, ``--data.image_size`` → ``--data.preprocessing.image_size``), else the closest spelling.
    """
    head, _, last = given.removeprefix("--").rpartition(".")
    group = f"--{head}." if head else "--"
    moved = {option for option in known if option.endswith(f".{last}") and option.startswith(group)}
    return sorted(moved, key=_by_length)[:3] or difflib.get_close_matches(given, known, n=1, cutoff=0.6)


def _by_length(option: str) -> tuple[int, str]:
    return len(option), option


def _group_prefix(key: str) -> str:
    """How the README writes an option inside the class given by ``key``'s class_path: a top-level group
    (``--data.loader.batch_size``) without ``init_args``, a nested one with it (``--model.optimizer.init_args.lr``).
    """
    return f"--{key}." + ("init_args." if "." in key else "")


def _class_options(class_path: str) -> list[str]:
    """The options of ``class_path``'s constructor, as jsonargparse names them (``--loader.batch_size``)."""
    module, _, name = class_path.rpartition(".")
    parser = ArgumentParser(exit_on_error=False)
    try:
        parser.add_class_arguments(getattr(importlib.import_module(module), name), fail_untyped=False)
    except (ImportError, AttributeError, ValueError):
        return []
    return _options(parser)


def _configured_classes(action: Any) -> list[str]:
    """The class paths an option that takes a class (by ``class_path``) holds by default, or, without a default,
    the class its type names (``data: ADNIDataModule | None``).
    """
    default = action.default
    class_path = default.get("class_path") if isinstance(default, dict | Namespace) else None
    if class_path:
        return [class_path]
    if default is None and getattr(action, "_typehint", None) is not None:
        classes = [arg for arg in get_args(action._typehint) if isinstance(arg, type) and arg is not type(None)]
        if len(classes) == 1 and get_origin(action._typehint) in (Union, UnionType):
            return [f"{classes[0].__module__}.{classes[0].__qualname__}"]
    return []


def _options(parser: ArgumentParser, expand: bool = False) -> list[str]:
    """Every option string ``parser`` knows, nested groups included; with ``expand``, also the options of the
    classes its class-valued options hold (``--model.optimizer.init_args.lr``), as :func:`_group_prefix` writes them.
    """
    options = []
    for action in parser._actions:
        options += [option for option in action.option_strings if option.startswith("--")]
        if expand:
            for class_path in _configured_classes(action):
                prefix = _group_prefix(action.dest)
                options += [prefix + option[2:] for option in _class_options(class_path)]
    return options


class CommandParser(ConciseErrors):
    """The parser of the project's own commands (``synth``, ``cv``, ...)."""


class CLIParser(ConciseErrors, LightningArgumentParser):
    """The parser of Lightning's ``fit``/``validate``/``test``/``predict``."""
