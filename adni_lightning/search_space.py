"""A hyper-parameter search space read from YAML: any dotted option of ``fit``, and the values it may take.

Each entry names one option of the run (``model.optimizer.init_args.lr``, ``data.tabular.volumes``,
``model.image_encoder``) and how to draw it::

    model.optimizer.init_args.lr: {low: 1.0e-4, high: 1.0e-2, log: true}   # float (log-uniform)
    model.dropout: {low: 0.0, high: 0.6}                                   # float (uniform)
    trainer.max_epochs: {low: 10, high: 30, step: 10}                      # int: low and high are integers
    data.tabular.volumes: {choices: [[], [Left-Hippocampus, Right-Hippocampus]]}   # categorical

``type`` (``float``, ``int``, ``categorical``) may be given; otherwise it follows from the entry. Categorical
choices may be anything an option takes, lists and ``class_path`` mappings included: Optuna records a choice that
is not a number, string, bool or null as its JSON text, so the dashboard shows it and the study stays readable.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import optuna
import yaml

from adni_lightning.errors import ProjectError

Kind = Literal["float", "int", "categorical"]
KINDS: tuple[Kind, ...] = ("float", "int", "categorical")
_PLAIN = (bool, int, float, str, type(None))


class SearchSpaceError(ProjectError, ValueError):
    """A search space file that cannot be read or names a range Optuna cannot draw from."""


@dataclass(frozen=True)
class Dimension:
    """One option of the space and its range (``low``/``high``) or ``choices``."""

    option: str
    kind: Kind
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: optuna.Trial) -> Any:
        """The trial's value of this option, as the run's parser takes it."""
        if self.kind == "categorical":
            stored = trial.suggest_categorical(self.option, [_stored(c) for c in self.choices])
            return self.choices[[_stored(c) for c in self.choices].index(stored)]
        assert self.low is not None and self.high is not None
        if self.kind == "int":
            step = int(self.step or 1)
            return trial.suggest_int(self.option, int(self.low), int(self.high), step=step, log=self.log)
        return trial.suggest_float(self.option, self.low, self.high, step=self.step, log=self.log)

    def value(self, stored: Any) -> Any:
        """A value as a finished trial's ``params`` hold it → the option's value."""
        if self.kind != "categorical":
            return stored
        return self.choices[[_stored(c) for c in self.choices].index(stored)]

    def ends(self) -> tuple[Any, Any]:
        """Two points of the range that between them reach every end: checked before any trial trains."""
        if self.kind == "categorical":
            return self.choices[0], self.choices[-1]
        assert self.low is not None and self.high is not None
        if self.kind == "int":
            return int(self.low), int(self.high)
        return self.low, self.high


def _stored(choice: Any) -> bool | int | float | str | None:
    """How Optuna records a categorical choice: itself when plain, else its JSON text."""
    return choice if isinstance(choice, _PLAIN) else json.dumps(choice, sort_keys=True)


def _number(option: str, entry: Mapping[str, Any], key: str, source: Path) -> float:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SearchSpaceError(f"{source}: {option}: {key} must be a number, got {value!r}")
    return value


def _dimension(option: str, entry: object, source: Path) -> Dimension:
    if not isinstance(entry, Mapping):
        raise SearchSpaceError(f"{source}: {option}: expected a mapping with low/high or choices, got {entry!r}")
    unknown = sorted(set(entry) - {"type", "low", "high", "log", "step", "choices"})
    if unknown:
        raise SearchSpaceError(f"{source}: {option}: unknown key(s) {unknown}; use type, low, high, log, step, choices")
    kind = entry.get("type")
    if kind is None:
        integers = all(isinstance(entry.get(k), int) and not isinstance(entry.get(k), bool) for k in ("low", "high"))
        kind = "categorical" if "choices" in entry else "int" if integers else "float"
    if kind not in KINDS:
        raise SearchSpaceError(f"{source}: {option}: type {kind!r} is not one of {list(KINDS)}")
    if kind == "categorical":
        choices = entry.get("choices")
        if not isinstance(choices, list) or not choices:
            raise SearchSpaceError(f"{source}: {option}: choices must be a non-empty list, got {choices!r}")
        if len({json.dumps(c, sort_keys=True) for c in choices}) < len(choices):
            raise SearchSpaceError(f"{source}: {option}: a choice is listed twice")
        return Dimension(option, "categorical", choices=tuple(choices))
    low, high = _number(option, entry, "low", source), _number(option, entry, "high", source)
    log, step = bool(entry.get("log", False)), entry.get("step")
    if not low < high:
        raise SearchSpaceError(f"{source}: {option}: low {low} must be below high {high}")
    if log and low <= 0:
        raise SearchSpaceError(f"{source}: {option}: a log range needs low > 0, got {low}")
    if step is not None and (log or not isinstance(step, int | float) or step <= 0):
        raise SearchSpaceError(f"{source}: {option}: step must be a positive number, and not with log: true")
    return Dimension(option, kind, float(low), float(high), log, None if step is None else float(step))


def load_space(path: str | Path) -> list[Dimension]:
    """The dimensions of the YAML file at ``path``, in its order."""
    path = Path(path)
    try:
        entries = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise SearchSpaceError(f"{path}: cannot read the search space: {str(err).splitlines()[0]}") from err
    if not isinstance(entries, dict) or not entries:
        raise SearchSpaceError(f"{path}: a search space maps dotted options (model.dropout) to their ranges")
    for option in entries:
        if not isinstance(option, str) or not option.startswith(("model.", "data.", "trainer.")):
            raise SearchSpaceError(f"{path}: {option!r} is not a model.*, data.* or trainer.* option")
        if option.startswith(("data.split.", "trainer.default_root_dir")):
            raise SearchSpaceError(f"{path}: {option} decides where and on whom a trial runs: it is not searchable")
    return [_dimension(option, entry, path) for option, entry in entries.items()]


def suggest(trial: optuna.Trial, space: list[Dimension]) -> dict[str, Any]:
    """The trial's value of every option of ``space``."""
    return {d.option: d.suggest(trial) for d in space}


def values(params: Mapping[str, Any], space: list[Dimension]) -> dict[str, Any]:
    """A finished trial's ``params`` → option values (categorical choices decoded)."""
    return {d.option: d.value(params[d.option]) for d in space}
