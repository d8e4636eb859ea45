"""A run's configuration, parsed exactly as ``fit`` parses it, for the commands that are not Lightning's.

``inspect``, ``baseline``, ``cv`` and ``interpret`` take ``--config FILE`` plus any ``--data.*``, ``--model.*``,
``--trainer.*`` override that ``fit`` takes; those go through the same LightningCLI parser, so a command sees
the cohort, split and preprocessing that training sees.
"""

from __future__ import annotations

from pathlib import Path

from adni_lightning.main import DEFAULT_CONFIG, ADNILightningCLI, lightning_cli

#: Option prefixes that belong to the run's configuration rather than to the command itself.
RUN_PREFIXES = ("--data.", "--model.", "--trainer.", "--checkpoint.", "--last_checkpoint.", "--seed_everything")


def split_run_options(argv: list[str]) -> tuple[list[str], list[str]]:
    """``argv`` → (the command's own options, the run options with their values), order kept."""
    own, run = [], []
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


def config_args(configs: list[Path] | None) -> list[str]:
    """``--config`` arguments for the given files, or the packaged default."""
    return [arg for path in (configs or [DEFAULT_CONFIG]) for arg in ("--config", str(path))]


def load_run(configs: list[Path] | None, overrides: list[str]) -> ADNILightningCLI:
    """Parse and build (without running) the model, DataModule and Trainer of a ``fit`` with this config."""
    return lightning_cli(["fit", *config_args(configs), *overrides], from_command_line=False, run=False)


def run_root(cli: ADNILightningCLI) -> Path:
    """The run's ``trainer.default_root_dir``."""
    return Path(cli.trainer.default_root_dir)
