"""One run of a configuration: its parsed options and the objects built from them, for the commands to use.

A command builds a :class:`Run` from ``--config`` files and the ``--data.*``/``--model.*``/``--trainer.*`` overrides
it was given (parsed by the same parser as ``fit``, so it sees the cohort, split and preprocessing that training
sees), derives the runs it needs (a fold, a prediction over a checkpoint) with typed option values, and executes
them. Lightning's lifecycle, the checkpoint checks and the run's folders stay in :mod:`adni_lightning.cli`: a command
never replays them by hand.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from jsonargparse import Namespace
from lightning.pytorch import Callback, Trainer

from adni_lightning.cli import ADNILightningCLI, last_file, lightning_cli
from adni_lightning.data.datamodule import ADNIDataModule
from adni_lightning.module import ADNIClassifier

#: Option prefixes that belong to the run's configuration rather than to a command of its own.
RUN_PREFIXES = ("--data.", "--model.", "--trainer.", "--checkpoint.", "--last_checkpoint.", "--seed_everything")


def split_run_options(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """``argv`` → (the command's own options, the run's options with their values), order kept."""
    own: list[str] = []
    run: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        target = run if token.startswith(RUN_PREFIXES) else own
        target.append(token)
        takes_value = token.startswith("--") and "=" not in token and i + 1 < len(argv)
        if target is run and takes_value and not argv[i + 1].startswith("--"):
            run.append(argv[i + 1])
            i += 1
        i += 1
    return own, run


def _value(value: object) -> str:
    """An option's value as the parser reads it from a command line."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, str | Path | int | float):
        return str(value)
    return json.dumps(value)


class Run:
    """A configuration parsed and built once for one Lightning subcommand (``fit`` by default), not yet executed.

    Without ``configs`` the packaged ``synthetic.yaml`` is used, unless ``overrides`` name a ``--config``.
    ``options`` are dotted option names (``"trainer.default_root_dir"``, ``"data.split.fold"``, ``"ckpt_path"``)
    with typed values; they win over ``overrides`` (the user's command-line options) and those over ``configs``.
    """

    def __init__(
        self,
        configs: Sequence[str | Path] | None = None,
        overrides: Sequence[str] = (),
        subcommand: str = "fit",
        options: Mapping[str, object] | None = None,
    ) -> None:
        self.configs = [str(c) for c in configs or ()]
        self.overrides = list(overrides)
        self.subcommand = subcommand
        self.options = dict(options or {})
        given = [arg for key, value in self.options.items() for arg in (f"--{key}", _value(value))]
        argv = [subcommand, *(a for c in self.configs for a in ("--config", c)), *self.overrides, *given]
        self.cli: ADNILightningCLI = lightning_cli(argv, execute=False)

    def derive(self, subcommand: str = "fit", options: Mapping[str, object] | None = None) -> Run:
        """The same configuration and overrides for ``subcommand``, with this run's options and ``options`` set."""
        return Run(self.configs, self.overrides, subcommand, {**self.options, **(options or {})})

    def execute(self, callbacks: Sequence[Callback] = ()) -> None:
        """Run the subcommand with every check of the command line, ``callbacks`` added to the trainer's."""
        self.cli.execute(callbacks)

    @property
    def model(self) -> ADNIClassifier:
        return self.cli.model

    @property
    def datamodule(self) -> ADNIDataModule:
        return self.cli.datamodule

    @property
    def trainer(self) -> Trainer:
        return self.cli.trainer

    @property
    def config(self) -> Namespace:
        """The subcommand's parsed options."""
        return self.cli.config[self.subcommand]

    @property
    def root(self) -> Path:
        """The run's folder, ``trainer.default_root_dir``."""
        return Path(self.trainer.default_root_dir)

    @property
    def last_checkpoint(self) -> Path:
        """Where this run keeps its ``last.ckpt`` (``--ckpt_path last`` resumes from it), whether or not it exists."""
        return last_file(self.config.last_checkpoint.dirpath)

    def cohort(self) -> pd.DataFrame:
        """The validated manifest (a synthetic config's cohort generated first, as ``fit`` does)."""
        self.datamodule.prepare_cohort()
        return self.datamodule.manifest()

    def dump(self) -> dict[str, Any]:
        """The parsed options as a plain mapping (what ``--print_config`` prints)."""
        return yaml.safe_load(self.cli.parser.dump(self.cli.config, skip_check=True))[self.subcommand]

    def configuration(self) -> dict[str, Any]:
        """:meth:`dump` less how one process starts (``ckpt_path``, ``weights_only``) and where it writes
        (``trainer.default_root_dir``): what processes adding to the same results must agree on, and what a saved
        config that others stack on should hold.
        """
        config = self.dump()
        for key in ("ckpt_path", "weights_only"):
            config.pop(key, None)
        config.get("trainer", {}).pop("default_root_dir", None)
        return config
