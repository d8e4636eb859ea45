"""Lightning's ``fit``/``validate``/``test``/``predict`` as a thin LightningCLI: the run's checks, folders and lines.

:class:`ADNILightningCLI` links the DataModule's shapes into the model, declares the run's two checkpoints, reads a
``--ckpt_path`` checkpoint before anything is built and refuses one that does not fit, holds the run folder's lock
during ``fit`` and says how to go on. :func:`lightning_cli` parses a command line with it; built with
``execute=False`` it stops before running the subcommand, which is how :class:`adni_lightning.run.Run` uses it.
"""

from __future__ import annotations

import contextlib
import glob
import re
import shlex
import signal
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins import TorchCheckpointIO
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from adni_lightning.arguments import CLIParser
from adni_lightning.atomic import AtomicCheckpointIO
from adni_lightning.checkpoint import (
    LIGHTNING_CKPT_NAMES,
    CheckpointError,
    ResumeError,
    RunFinishedError,
    RunOptions,
    adopt_preprocessing,
    check_model,
    check_options,
    finished_epochs,
    read_checkpoint,
)
from adni_lightning.data.datamodule import ADNIDataModule
from adni_lightning.data.split import SplitError
from adni_lightning.environment import EnvironmentRecord
from adni_lightning.errors import OptionError
from adni_lightning.evaluation.calibration import CALIBRATION_FILE, load_temperature
from adni_lightning.module import DATA_STATE_KEY, ADNIClassifier
from adni_lightning.prediction_writer import PredictionWriter
from adni_lightning.run_lock import run_lock
from adni_lightning.stopping import RunInterrupted, StopOnSignals

PROG = "python -m adni_lightning"
CONFIG_DIR = Path(__file__).parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "synthetic.yaml"
LIGHTNING_COMMANDS = {
    "fit": "train a model (resume with --ckpt_path last)",
    "validate": "score a checkpoint on the validation split",
    "test": "score a checkpoint on the test split",
    "predict": "write predictions.csv for a checkpoint",
}
#: Commands that score a trained model: they log into ``<root>/<command>/``, never into the training run's folder.
EVALUATION_COMMANDS = ("validate", "test", "predict")

#: The two checkpoints of every run, declared once: the best by validation balanced accuracy, and the last
#: epoch for --ckpt_path last (a monitored checkpoint refreshes last.ckpt only in epochs that improved).
CHECKPOINT_DEFAULTS = {
    "checkpoint.monitor": "val/bacc",
    "checkpoint.mode": "max",
    "checkpoint.filename": "best-epoch{epoch:03d}-bacc{val/bacc:.3f}",
    "checkpoint.auto_insert_metric_name": False,
    # The latest epoch under one name, overwritten each epoch (save_last would keep an epochNNN.ckpt beside it).
    "last_checkpoint.filename": ModelCheckpoint.CHECKPOINT_NAME_LAST,
    "last_checkpoint.enable_version_counter": False,
}
#: The best checkpoint of a score task (a regression, which has no balanced accuracy): the lowest validation MAE.
#: They replace those of :data:`CHECKPOINT_DEFAULTS` that the config leaves at their defaults.
REGRESSION_CHECKPOINT = {
    "monitor": "val/mae",
    "mode": "min",
    "filename": "best-epoch{epoch:03d}-mae{val/mae:.3f}",
}


def _follow_task(config: Namespace) -> None:
    """Make the best checkpoint follow a score task: :data:`REGRESSION_CHECKPOINT` for each option still at its
    classification default (whatever the config set stays).
    """
    task = (config.data.get("init_args") or Namespace()).get("task")
    if task is None or task.get("label") != "score":
        return
    for key, value in REGRESSION_CHECKPOINT.items():
        if config.checkpoint[key] == CHECKPOINT_DEFAULTS[f"checkpoint.{key}"]:
            config.checkpoint[key] = value


def last_file(dirpath: str | Path) -> Path:
    """The ``last.ckpt`` of a checkpoint folder."""
    return Path(dirpath) / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{ModelCheckpoint.FILE_EXTENSION}"


def _hpc_checkpoint(root: str | Path) -> Path | None:
    """The newest ``hpc_ckpt_N.ckpt`` that SLURM's auto-requeue saved in ``root``, which Lightning resumes from when
    the requeued job starts (under SLURM, without ``--ckpt_path``); ``None`` elsewhere.
    """
    if not SLURMEnvironment.detect():
        return None
    saved = {
        int(m.group(1)): p
        for p in Path(root).glob("hpc_ckpt_*.ckpt")
        if (m := re.fullmatch(r"hpc_ckpt_(\d+)\.ckpt", p.name))
    }
    return saved[max(saved)] if saved else None


def without(args: list[str], options: list[str]) -> list[str]:
    """``args`` less every ``--option value`` and ``--option=value`` of ``options``."""
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in options:
            skip = True
        elif arg.split("=", 1)[0] not in options:
            kept.append(arg)
    return kept


def model_checkpoints(trainer: Trainer) -> list[ModelCheckpoint]:
    """The trainer's checkpoint callbacks (Lightning types them as the ``Checkpoint`` base class)."""
    return [c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)]


def trainer_callbacks(trainer: Trainer) -> list[Callback]:
    """The trainer's callback list, to add to (Lightning sets it outside ``Trainer.__init__``, unseen by mypy)."""
    found: list[Callback] = trainer.callbacks  # type: ignore[attr-defined]
    return found


def _last_checkpoint(trainer: Trainer) -> ModelCheckpoint | None:
    """The callback that keeps ``last.ckpt``."""
    return next((c for c in model_checkpoints(trainer) if c.filename == ModelCheckpoint.CHECKPOINT_NAME_LAST), None)


class ADNILightningCLI(LightningCLI):
    """LightningCLI with the DataModule's shapes linked into the model, shared callbacks and explicit resume.

    ``execute=False`` parses and builds everything, checks included, but leaves the subcommand to
    :meth:`execute`: a :class:`~adni_lightning.run.Run` adds its callbacks first.
    """

    def __init__(self, *args: Any, execute: bool = True, default_config_added: bool = False, **kwargs: Any) -> None:
        self._deferred = not execute
        self._default_config_added = default_config_added
        super().__init__(*args, **kwargs)

    def _run_subcommand(self, subcommand: str) -> None:
        if not self._deferred:
            super()._run_subcommand(subcommand)

    def execute(self, callbacks: Sequence[Callback] = ()) -> None:
        """Run the subcommand built with ``execute=False``, with ``callbacks`` added to the trainer's, once."""
        if not self._deferred or self.subcommand is None:
            raise RuntimeError("execute() runs a subcommand built with execute=False, once")
        self._deferred = False
        trainer_callbacks(self.trainer).extend(callbacks)
        super()._run_subcommand(self.subcommand)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for source, target in (
            ("data.num_classes", "model.num_classes"),
            ("data.num_tabular_features", "model.num_tabular_features"),
            ("data.in_channels", "model.in_channels"),
            ("data.input_kind", "model.input_kind"),
            ("data.output_names", "model.class_names"),
            ("data.objective", "model.objective"),
        ):
            parser.link_arguments(source, target, apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(ModelCheckpoint, "last_checkpoint")
        parser.set_defaults(CHECKPOINT_DEFAULTS)

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        """``predict`` alone takes ``--calibration``: the other commands write no probabilities to scale."""
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand == "predict":
            parser.add_argument(
                "--calibration",
                type=str | None,
                default=None,
                help=f"scale the probabilities with the temperature of this file (cv writes <root>/{CALIBRATION_FILE})",
            )
        return parser

    def before_instantiate_classes(self) -> None:
        """Place everything of a run under ``trainer.default_root_dir`` unless the config says otherwise, and read the
        checkpoint before anything is built from the config.

        ``<root>/checkpoints`` for a ModelCheckpoint without ``dirpath`` and ``<root>/tensorboard`` for the
        logger when the config gives none: fixed paths, so ``--ckpt_path last`` finds the run's last.ckpt and a
        resumed run's curves continue in the same TensorBoard run instead of a new ``version_N``. ``validate``,
        ``test`` and ``predict`` log (and save their ``config.yaml``) into ``<root>/<command>/`` instead, and save
        no config without a logger, so they never touch the training run's events or ``config.yaml``. They read the
        images with the checkpoint's preprocessing (the input it was trained on), saying so for each option that
        differs from the config; a ``fit`` resume refuses another preprocessing instead (:meth:`check_checkpoint`).
        """
        config = self.config[self.subcommand] if self.subcommand else self.config
        _follow_task(config)
        root = Path(config.trainer.default_root_dir or ".")
        for key in ("checkpoint", "last_checkpoint"):
            if config[key].dirpath is None:
                config[key].dirpath = str(root / "checkpoints")
        for callback in config.trainer.callbacks or []:
            if callback.class_path.endswith(".ModelCheckpoint") and callback.init_args.dirpath is None:
                callback.init_args.dirpath = str(root / "checkpoints")
        evaluating = self.subcommand in EVALUATION_COMMANDS
        ckpt_file = Path(str(config.get("ckpt_path") or ""))
        if evaluating and ckpt_file.is_file():
            # Evaluation saves no checkpoint; its callbacks restore the training run's state, which names the
            # folder the checkpoint was saved in (elsewhere Lightning warns that the dirpath changed).
            for key in ("checkpoint", "last_checkpoint"):
                config[key].dirpath = str(ckpt_file.parent)
        if config.trainer.logger in (None, True):
            config.trainer.logger = Namespace(
                class_path="lightning.pytorch.loggers.TensorBoardLogger",
                init_args=Namespace(
                    save_dir=str(root), name=self.subcommand if evaluating else "tensorboard", version=""
                ),
            )
        elif evaluating and config.trainer.logger is False:
            self.save_config_callback = None
        self._checkpoint, self._checkpoint_source = self._read_checkpoint(config)
        if evaluating and self._checkpoint is not None:
            for line in adopt_preprocessing(config.data, self._checkpoint.get(DATA_STATE_KEY)):
                print(f"{self.subcommand}: {line}")

    def _read_checkpoint(self, config: Namespace) -> tuple[dict | None, str]:
        """The ``--ckpt_path`` checkpoint, read and CRC-checked, and how to name it; ``None`` without one.

        ``last`` is the run's last.ckpt (:meth:`check_fit` says when there is none); Lightning's other names
        (``best``, ``hpc``) are left to Lightning. ``validate``, ``test`` and ``predict`` without one are refused: they
        would score an untrained model (``predict`` fails after writing its folder).
        """
        value = config.get("ckpt_path")
        if value is None and self.subcommand in EVALUATION_COMMANDS:
            last = last_file(config.last_checkpoint.dirpath)
            example = f"e.g. --ckpt_path {last}" if last.is_file() else "train one with fit first"
            raise CheckpointError(f"{self.subcommand} needs --ckpt_path, the checkpoint to score ({example})")
        if value is None or value in LIGHTNING_CKPT_NAMES or str(value).startswith("registry"):
            return None, ""
        if value == "last":
            path = last_file(config.last_checkpoint.dirpath)
            return (read_checkpoint(path), f"--ckpt_path last ({path})") if path.is_file() else (None, "")
        return read_checkpoint(value), f"--ckpt_path {value}"

    def _parse_ckpt_path(self) -> None:
        """Keep the checkpoint's hyper-parameters out of the config (Lightning merges them in since 2.5.5): the
        config describes the model, and :meth:`check_checkpoint` refuses a checkpoint that does not fit it.
        """

    def check_checkpoint(self) -> None:
        """Refuse a ``--ckpt_path`` checkpoint trained on other data or with another model than the config describes,
        before anything is written or loaded (Lightning would prepare the data and then fail on the weights); a
        ``fit`` resume also with other training options, or with nothing left to train; ``test`` without a test side.
        """
        checkpoint, self._checkpoint = self._checkpoint, None  # the weights are not kept past the check
        if checkpoint is None:
            return
        source = self._checkpoint_source
        self.datamodule.trainer = self.trainer  # the split's path may sit in the run folder
        self.datamodule.check_checkpoint_state(checkpoint.get(DATA_STATE_KEY), self.subcommand, source)
        check_model(checkpoint, self.model, source)
        if self.subcommand == "fit":
            self._dump_config()  # Lightning's dump of the parsed options (self.config_dump), made once
            check_options(checkpoint, self.config_dump, source)
            finished = self._finished(checkpoint)
            if finished:
                given = str(self.config[self.subcommand].get("ckpt_path") or "last")
                raise RunFinishedError(
                    f"{source} {finished}: nothing to resume; to train longer pass a larger --trainer.max_epochs "
                    f"(e.g. {self._command('fit', ckpt_path=given, max_epochs=2 * finished_epochs(checkpoint))})"
                )
        if self.subcommand == "test" and not (self.datamodule.planned_split()["split"] == "test").any():
            raise SplitError(
                f"{self.datamodule.split_path} has no test side, so there is nothing to test {source} on: "
                "score it with validate, or train a run with data.split.test_fraction > 0"
            )

    def check_checkpoint_file(self, path: str | Path) -> None:
        """:meth:`check_checkpoint` for another checkpoint than ``--ckpt_path`` (an ensemble's next member)."""
        self._checkpoint, self._checkpoint_source = read_checkpoint(path), f"--ckpt_path {path}"
        self.check_checkpoint()

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        """Keep the options as given (less the packaged config when :func:`lightning_cli` added it, not the user): the
        commands printed after ``fit`` and on a signal repeat them.
        """
        given = list(sys.argv[1:] if args is None else args)
        if given and given[0] in LIGHTNING_COMMANDS:
            given = given[1:]
        self.given_args = given[2:] if self._default_config_added else given
        super().parse_arguments(parser, args)

    def fit(self, model: ADNIClassifier, **kwargs: Any) -> None:
        """``Trainer.fit`` holding the run folder's lock, after the checks of :meth:`check_fit`, stopped by a signal
        as a failure that says how to resume (:mod:`adni_lightning.stopping`).
        """
        with contextlib.ExitStack() as stack:
            if getattr(rank_zero_only, "rank", 0) == 0:  # other ranks (DDP) run inside this one's lock
                stack.enter_context(run_lock(self.trainer.default_root_dir))
            self.check_fit()
            self._dump_config()  # Lightning's dump of the parsed options (self.config_dump), made once
            trainer_callbacks(self.trainer).append(RunOptions(self.config_dump))
            trainer_callbacks(self.trainer).append(
                EnvironmentRecord()
            )  # <root>/environment.json: what the figures depend on
            stop = stack.enter_context(StopOnSignals(self.trainer))
            try:
                self.trainer.fit(model, **kwargs)
            except SystemExit:
                if stop.signum is None:
                    raise
            if stop.signum is not None:
                raise RunInterrupted(stop.signum, self._stopped(stop.signum), self.trainer.default_root_dir)

    def check_fit(self) -> None:
        """Refuse a fresh ``fit`` over an existing run's ``last.ckpt``, a ``last`` resume with none, and a checkpoint
        that does not fit (:meth:`check_checkpoint`), before anything is written.

        Lightning would overwrite the first silently and start the second from scratch with only a warning. Under
        SLURM a fresh ``fit`` in a folder with an ``hpc_ckpt_N.ckpt`` is the requeued job: Lightning resumes it.
        """
        if type(self.trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # none of the config's own
            self.trainer.strategy.checkpoint_io = AtomicCheckpointIO()  # a full disk keeps the last good checkpoint
        checkpoint = _last_checkpoint(self.trainer)
        if checkpoint is None or checkpoint.dirpath is None or getattr(self.trainer, "fast_dev_run", False):
            return
        last = last_file(checkpoint.dirpath)
        ckpt_path = self.config[self.subcommand].get("ckpt_path")
        hpc = _hpc_checkpoint(self.trainer.default_root_dir) if ckpt_path is None else None
        if hpc is not None:
            self._checkpoint, self._checkpoint_source = read_checkpoint(hpc), f"the requeued job's {hpc}"
        elif ckpt_path is None and last.exists():
            raise ResumeError(
                f"{last} exists: resume with --ckpt_path last, or start a new run in another directory "
                "(--trainer.default_root_dir) or delete it"
            )
        if ckpt_path == "last" and not last.exists():
            raise ResumeError(f"--ckpt_path last: no {last} to resume from")
        self.check_checkpoint()

    def _stopped(self, signum: int) -> str:
        """The line a signal ends ``fit`` with: what ``last.ckpt`` holds and the command that goes on from it."""
        name = signal.Signals(signum).name
        callback = _last_checkpoint(self.trainer)
        last = last_file(callback.dirpath) if callback is not None and callback.dirpath else None
        if last is None or not last.is_file():
            return (
                f"stopped by {name} before its first checkpoint, nothing to resume; start again: {self._command('fit')}"
            )
        checkpoint = read_checkpoint(last)
        held = finished_epochs(checkpoint)
        if self._finished(checkpoint):
            return (
                f"stopped by {name} after its last epoch ({last} holds all {held}): to train longer: "
                f"{self._command('fit', ckpt_path='last', max_epochs=2 * held)}"
            )
        return (
            f"stopped by {name}; {last} holds {held} finished epoch(s) and a resume restarts the next one: "
            f"{self._command('fit', ckpt_path='last')}"
        )

    def _finished(self, checkpoint: dict) -> str | None:
        """How ``checkpoint`` already reached this run's ``trainer.max_epochs`` or ``max_steps``, or ``None``."""
        epochs, steps = finished_epochs(checkpoint), int(checkpoint.get("global_step", 0))
        max_epochs, max_steps = self.trainer.max_epochs, self.trainer.max_steps
        if max_epochs is not None and max_epochs >= 0 and epochs >= max_epochs:
            return f"has finished its {epochs} epoch(s) (trainer.max_epochs {max_epochs})"
        if max_steps is not None and max_steps >= 0 and steps >= max_steps:
            return f"has made its {steps} step(s) (trainer.max_steps {max_steps})"
        return None

    def _command(self, subcommand: str, ckpt_path: str | None = None, max_epochs: int | None = None) -> str:
        """``subcommand`` with every option this run was given, ``--ckpt_path`` (and ``--trainer.max_epochs``)
        replaced: a line to paste into a shell.
        """
        replaced = {"--ckpt_path": ckpt_path, "--trainer.max_epochs": max_epochs}
        replaced = {k: v for k, v in replaced.items() if v is not None}
        args = without(self.given_args, [*replaced, "--ckpt_path"])
        args += [str(a) for pair in replaced.items() for a in pair]
        return shlex.join([*PROG.split(), subcommand, *args])

    def before_validate(self) -> None:
        self.check_checkpoint()

    def before_test(self) -> None:
        self.check_checkpoint()

    def after_fit(self) -> None:
        """Say where the run's checkpoints, curves and last validation figures are, and how to go on: each command
        repeats the options the run was given.
        """
        best = next((c for c in model_checkpoints(self.trainer) if c is self.trainer.checkpoint_callback), None)
        last = getattr(_last_checkpoint(self.trainer), "best_model_path", None)
        if not self.trainer.is_global_zero or not last:
            return
        metrics = {k: float(v) for k, v in sorted(self.trainer.callback_metrics.items()) if k.startswith("val/")}
        epochs = self.trainer.current_epoch
        lines = [
            f"last validation (epoch {epochs - 1}): " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()),
            f"last checkpoint: {last}",
        ]
        if best is not None and best.best_model_path and best.best_model_score is not None:
            lines.append(f"best checkpoint ({best.monitor} {float(best.best_model_score):.3f}): {best.best_model_path}")
        if isinstance(self.trainer.logger, TensorBoardLogger):
            lines.append(f"curves:   {shlex.join(['tensorboard', '--logdir', self.trainer.logger.root_dir])}")
        chosen = best.best_model_path if best is not None and best.best_model_path else last
        lines += [
            f"resume:   {self._command('fit', ckpt_path='last', max_epochs=2 * epochs)}",
            f"validate: {self._command('validate', ckpt_path=chosen)}",
            f"predict:  {self._command('predict', ckpt_path=last)}",
        ]
        print("\n".join(lines))

    def before_predict(self) -> None:
        """Check the checkpoint; make sure predictions are written even if the config names no PredictionWriter, and
        give the writers the ``--calibration`` temperature.
        """
        self.check_checkpoint()
        if not any(isinstance(c, PredictionWriter) for c in trainer_callbacks(self.trainer)):
            trainer_callbacks(self.trainer).append(PredictionWriter())
        calibration = self.config[self.subcommand].get("calibration")
        if calibration is not None and self.datamodule.task.regression:
            task = self.datamodule.task.contract()
            raise OptionError(
                f"--calibration {calibration} scales class probabilities, and data.task {task} predicts a value, which "
                "has none: drop --calibration"
            )
        if calibration is not None:
            temperature = load_temperature(calibration, self.datamodule.classes)
            for writer in (c for c in trainer_callbacks(self.trainer) if isinstance(c, PredictionWriter)):
                writer.temperature = temperature
            print(f"predict: probabilities scaled with temperature {temperature:.4f} of --calibration {calibration}")


def lightning_cli(argv: list[str], from_command_line: bool = False, execute: bool = True) -> ADNILightningCLI:
    """Parse ``argv`` (a subcommand first, then its options) and run it; with ``execute=False`` only build its objects
    (:meth:`ADNILightningCLI.execute` runs it). Without ``--config`` the packaged ``synthetic.yaml`` is used.
    """
    add_default = (
        not any(a == "--config" or a.startswith("--config=") for a in argv[1:])
        and "-h" not in argv
        and "--help" not in argv
    )
    if add_default:
        argv[1:1] = ["--config", str(DEFAULT_CONFIG)]
    if from_command_line:
        sys.argv[1:] = argv  # DDP's re-launch of this command reads sys.argv
    with warnings.catch_warnings():
        # In-process runs (commands, tests) pass argv while sys.argv holds the outer command's: intended here.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended", category=UserWarning)
        return ADNILightningCLI(
            ADNIClassifier,
            ADNIDataModule,
            subclass_mode_data=True,
            args=None if from_command_line else argv,
            save_config_kwargs={"overwrite": True},
            parser_class=CLIParser,
            parser_kwargs={"prog": PROG},
            execute=execute,
            default_config_added=add_default,
        )


def checkpoint_paths(values: Sequence[str]) -> list[str]:
    """Each ``--ckpt_path`` value, glob patterns (``fold_*/checkpoints/last.ckpt``) expanded in order."""
    paths = []
    for value in values:
        matches = sorted(glob.glob(value)) if glob.has_magic(value) else [value]
        if not matches:
            raise CheckpointError(
                f"--ckpt_path {value}: no file matches this pattern (relative to {Path.cwd()}); check the folder, "
                "or pass each checkpoint with its own --ckpt_path"
            )
        paths += matches
    return paths
