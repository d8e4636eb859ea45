"""Each command's options declared once: a command is a function, and its signature (with the ``Args:`` of its
docstring) is its parser.

``invoke`` splits the run's own options (``--data.*``, ``--model.*``, ``--trainer.*`` ...) off the command line,
parses the rest with a parser built from the function, builds the :class:`~adni_lightning.run.Run` of ``--config``
and those options when the function's first parameter is ``run``, and calls it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from adni_lightning.arguments import CommandParser
from adni_lightning.cli import PROG
from adni_lightning.run import Run, split_run_options

RUN_OPTIONS_HELP = (
    "Any --data.*, --model.*, --trainer.*, --checkpoint.* or --seed_everything option of `fit` goes to the run's "
    "configuration (e.g. --data.manifest.data_dir DIR)."
)


def _takes_run(function: Callable[..., Any]) -> bool:
    return next(iter(inspect.signature(function).parameters), None) == "run"


def command_parser(name: str, doc: str, function: Callable[..., Any]) -> CommandParser:
    """Command ``name``'s parser: ``doc``'s first line, ``--config`` if it takes a run, ``function``'s options."""
    takes_run = _takes_run(function)
    parser = CommandParser(
        prog=f"{PROG} {name}",
        description=doc.strip().splitlines()[0],
        epilog=RUN_OPTIONS_HELP if takes_run else None,
        exit_on_error=True,
    )
    if takes_run:
        parser.add_argument(
            "--config",
            type=str,
            action="append",
            default=None,
            help="the run's config file, as for fit (repeat for several; default: the packaged synthetic.yaml)",
        )
    parser.add_function_arguments(function, nested_key=None, skip={"run"}, fail_untyped=True)
    return parser


def invoke(name: str, doc: str, function: Callable[..., Any], argv: list[str]) -> Any:
    """Parse ``argv`` for command ``name`` and call ``function`` with the run (if it takes one) and the options."""
    takes_run = _takes_run(function)
    own, overrides = split_run_options(argv) if takes_run else (argv, [])
    options = command_parser(name, doc, function).parse_args(own)
    kwargs = {key: options[key] for key in inspect.signature(function).parameters if key != "run"}
    if not takes_run:
        return function(**kwargs)
    return function(Run(options.config, overrides), **kwargs)
