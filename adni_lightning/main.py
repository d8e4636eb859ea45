"""``python -m adni_lightning COMMAND``: Lightning's fit/validate/test/predict, and the project's own commands.

``fit|validate|test|predict --config FILE`` go to a thin LightningCLI (:mod:`adni_lightning.cli`); without ``--config``
the packaged ``synthetic.yaml`` is used (a synthetic cohort generated on first use, trained on the CPU in minutes).
``predict`` with several checkpoints averages them (:mod:`adni_lightning.ensemble`). The other commands
(:data:`~adni_lightning.commands.COMMANDS`) each live in a small module of :mod:`adni_lightning.commands`.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys

from lightning.pytorch.utilities.rank_zero import rank_zero_only

from adni_lightning import commands, console
from adni_lightning.atomic import output_dir
from adni_lightning.cli import (
    DEFAULT_CONFIG,
    LIGHTNING_COMMANDS,
    PROG,
    ADNILightningCLI,
    checkpoint_paths,
    lightning_cli,
    without,
)
from adni_lightning.ensemble import predict_ensemble
from adni_lightning.run import Run
from adni_lightning.stopping import RunInterrupted


def overview() -> str:
    """The text of ``python -m adni_lightning --help``: every command, Lightning's and the project's."""
    lines = [f"usage: {PROG} COMMAND [--config FILE] [options]", "", "commands (each has --help):"]
    for name, summary in {**LIGHTNING_COMMANDS, **commands.summaries()}.items():
        lines.append(f"  {name:<10} {summary}")
    lines += ["", f"Without --config, {', '.join(LIGHTNING_COMMANDS)} use the packaged {DEFAULT_CONFIG.name}."]
    lines.append("An error ends with its message alone; --debug (or ADNI_LIGHTNING_DEBUG=1) shows its traceback.")
    return "\n".join(lines)


def _ckpt_values(argv: list[str]) -> list[str]:
    """Every ``--ckpt_path`` value of a command line."""
    values = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--ckpt_path"]
    return values + [a.split("=", 1)[1] for a in argv if a.startswith("--ckpt_path=")]


def main(args: list[str] | None = None) -> ADNILightningCLI | None:
    """Entry point; ``args`` as on the command line (tests call ``main([...])``)."""
    argv = sys.argv[1:] if args is None else list(args)
    console.setup()
    if not argv or argv[0] in ("-h", "--help"):
        print(overview())
        return None
    if argv[0] in commands.COMMANDS:
        commands.run(argv[0], argv[1:])
        return None
    if argv[0] == "predict":
        checkpoints = checkpoint_paths(_ckpt_values(argv))
        if len(checkpoints) > 1:
            run = Run(None, without(argv[1:], ["--ckpt_path"]), "predict", {"ckpt_path": checkpoints[0]})
            output_dir(run.root, "--trainer.default_root_dir")
            predict_ensemble(run, checkpoints)
            return None
    return lightning_cli(argv, from_command_line=args is None)


def run_from_command_line() -> None:
    """``python -m adni_lightning``: a project error ends with its message alone (exit 1), not a traceback
    through Lightning; ``ADNI_LIGHTNING_DEBUG=1`` shows the traceback. A signal ends ``fit`` (also inside another
    command) with 128 + its number and the command that goes on.
    """
    if "--debug" in sys.argv[1:]:  # anywhere on the line: the same as ADNI_LIGHTNING_DEBUG=1
        sys.argv.remove("--debug")
        os.environ["ADNI_LIGHTNING_DEBUG"] = "1"  # processes that DDP launches inherit it
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    try:
        main()
    except RunInterrupted as stop:
        message = stop.message
        if command not in LIGHTNING_COMMANDS:  # a fit inside another command (cv's folds): that command goes on
            again = shlex.join([*PROG.split(), *sys.argv[1:]])
            name = signal.Signals(stop.signum).name
            message = f"stopped by {name} while training in {stop.root}; the same command goes on from there: {again}"
        if getattr(rank_zero_only, "rank", 0) == 0:  # DDP's other processes stop with it, silently
            print(f"{PROG} {command}: {message}", file=sys.stderr)
        sys.exit(stop.code)
    except Exception as error:
        said = console.error_message(error)
        if said is None or os.environ.get("ADNI_LIGHTNING_DEBUG"):
            raise
        print(f"{PROG} {command}: error: {said}", file=sys.stderr)
        sys.exit(1)
