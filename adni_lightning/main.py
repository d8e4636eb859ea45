"""``python -m adni_lightning fit|validate|test|predict --config FILE`` (LightningCLI).

Without ``--config`` the packaged ``synthetic.yaml`` is used: a synthetic cohort is generated on first use
and trained on the CPU in a few minutes.
"""

from __future__ import annotations

import sys
from pathlib import Path

from jsonargparse import Namespace
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from adni_lightning.data.datamodule import ADNIDataModule
from adni_lightning.module import ADNIClassifier
from adni_lightning.prediction_writer import PredictionWriter

CONFIG_DIR = Path(__file__).parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "synthetic.yaml"
SUBCOMMANDS = ("fit", "validate", "test", "predict")


class ResumeError(RuntimeError):
    """``fit`` would overwrite an earlier run, or ``--ckpt_path last`` has nothing to resume."""


class ADNILightningCLI(LightningCLI):
    """LightningCLI with the DataModule's shapes linked into the model and resume made explicit."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for source, target in (
            ("data.num_classes", "model.num_classes"),
            ("data.num_tabular_features", "model.num_tabular_features"),
            ("data.in_channels", "model.in_channels"),
            ("data.classes", "model.class_names"),
        ):
            parser.link_arguments(source, target, apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        """Place everything of a run under ``trainer.default_root_dir`` unless the config says otherwise.

        ``<root>/checkpoints`` for a ModelCheckpoint without ``dirpath`` and ``<root>/tensorboard`` for the
        logger when the config gives none: fixed paths, so ``--ckpt_path last`` finds the run's last.ckpt and a
        resumed run's curves continue in the same TensorBoard run instead of a new ``version_N``.
        """
        config = self.config[self.subcommand] if self.subcommand else self.config
        root = Path(config.trainer.default_root_dir or ".")
        for callback in config.trainer.callbacks or []:
            if callback.class_path.endswith(".ModelCheckpoint") and callback.init_args.dirpath is None:
                callback.init_args.dirpath = str(root / "checkpoints")
        if config.trainer.logger in (None, True):
            config.trainer.logger = Namespace(
                class_path="lightning.pytorch.loggers.TensorBoardLogger",
                init_args=Namespace(save_dir=str(root), name="tensorboard", version=""),
            )

    def before_fit(self) -> None:
        """Refuse a fresh ``fit`` over an existing run's ``last.ckpt``, and a ``last`` resume with none.

        Lightning would overwrite the first silently and start the second from scratch with only a warning.
        """
        checkpoint = next((c for c in self.trainer.checkpoint_callbacks if c.save_last), None)
        if checkpoint is None or checkpoint.dirpath is None or self.trainer.fast_dev_run:
            return
        last = Path(checkpoint.dirpath) / f"{checkpoint.CHECKPOINT_NAME_LAST}{checkpoint.FILE_EXTENSION}"
        ckpt_path = self.config[self.subcommand].get("ckpt_path")
        if ckpt_path is None and last.exists():
            raise ResumeError(
                f"{last} exists: resume with --ckpt_path last, or start a new run in another directory "
                "(--trainer.default_root_dir / ModelCheckpoint dirpath) or delete it"
            )
        if ckpt_path == "last" and not last.exists():
            raise ResumeError(f"--ckpt_path last: no {last} to resume from")

    def before_predict(self) -> None:
        """Make sure predictions are written even if the config names no PredictionWriter."""
        if not any(isinstance(c, PredictionWriter) for c in self.trainer.callbacks):
            self.trainer.callbacks.append(PredictionWriter())


def main(args: list[str] | None = None) -> ADNILightningCLI:
    """Entry point; ``args`` as on the command line (tests call ``main([...])``)."""
    argv = sys.argv[1:] if args is None else list(args)
    if argv and argv[0] in SUBCOMMANDS and not any(a == "--config" or a.startswith("--config=") for a in argv):
        argv[1:1] = ["--config", str(DEFAULT_CONFIG)]
    if args is None:
        sys.argv[1:] = argv  # LightningCLI (and DDP's re-launch of this command) read sys.argv
    return ADNILightningCLI(
        ADNIClassifier,
        ADNIDataModule,
        args=None if args is None else argv,
        save_config_kwargs={"overwrite": True},
    )
