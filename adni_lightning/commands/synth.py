"""Write a synthetic ADNI download (CSV + FastSurfer-format label maps) with a known disease signal.

``python -m adni_lightning synth --out DIR [--subjects N] [--size S] [--preset shifted] ...``: the files are in the
real download's format, so every other command reads them as it would read ADNI.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Literal

from adni_lightning.arguments import CommandParser
from adni_lightning.synth.cohort import GROUPS, PRESETS, SyntheticCohort, check_cohort_folder, generate_cohort

PROG = "python -m adni_lightning synth"


def parser() -> CommandParser:
    """The command's options: the output folder, processes, a preset, and :class:`SyntheticCohort`'s fields."""
    p = CommandParser(prog=PROG, description=__doc__.splitlines()[0], exit_on_error=True)
    p.add_argument("--out", type=Path, required=True, help="folder to write the cohort into")
    p.add_argument("--workers", type=int | None, default=None, help="processes (default: every core)")
    p.add_argument(
        "--preset",
        type=Literal[tuple(PRESETS)] | None,
        default=None,
        help="start from these cohort options (options given explicitly win): "
        + "; ".join(f"{name}: {values}" for name, values in PRESETS.items()),
    )
    p.add_class_arguments(SyntheticCohort, nested_key=None, fail_untyped=True)
    return p


def main(argv: list[str]) -> None:
    """Generate the cohort (only into a new folder or an earlier synthetic cohort's) and say what was written."""
    p = parser()
    preset = p.parse_args(argv).preset
    if preset:
        p.set_defaults(PRESETS[preset])
    config = p.parse_args(argv)
    check_cohort_folder(config.out, "--out")
    cohort = {f.name: config[f.name] for f in fields(SyntheticCohort)}
    table = generate_cohort(config.out, workers=config.workers, **cohort)
    groups = ", ".join(f"{g} {n}" for g, n in table["Group"].value_counts().reindex(GROUPS, fill_value=0).items())
    print(f"wrote {len(table)} images of {table['Subject'].nunique()} subjects ({groups}) to {config.out}")
