"""Search hyper-parameters with Optuna, each trial scored by an inner cross-validation of training subjects only.

``python -m adni_lightning tune [--config FILE] [--space FILE] [--trials 20] [--timeout S] [--inner_folds 3]
[--outer_folds K] [--root DIR] [--storage URL] [--sampler tpe] [--pruner none] [--metric bacc] [--threads N]
[overrides]``

A trial draws a value for every option of the search space (``configs/search/synthetic.yaml`` by default) and
trains it on ``--inner_folds`` subject-grouped, stratified folds of the training subjects, each an ordinary run
(``DIR/<search>/trial_N/fold_J``, so TensorBoard overlays them); its score is the pooled out-of-fold metric of
those folds at the last epoch, as in ``cv``. Pruning sees the score of the folds finished so far, nothing else.

Without ``--outer_folds`` the search uses every non-test subject, and its best trial is a *choice*, not an
estimate: its score was the maximum of many looks at the same folds. ``--outer_folds K`` gives the estimate
(nested cross-validation): the outer folds are ``cv --folds K``'s; for each, a search on its training subjects
alone, the chosen configuration refitted on all of them (last epoch) and scored on the held-out fold, which
chose nothing. The report (``cv_report.md``, the cv report's form) sets the tuned models beside the default
configuration and the regional-volume baseline on the same outer folds, with paired differences, and
``tune_report.md`` lists the choice of each outer fold.

Start the same command again (another shell, machine, or SLURM array task) to add a worker: the workers share
the study in ``DIR/study.journal`` (or ``--storage URL``), together run exactly ``--trials`` trials per search,
and re-run a trial whose worker died (its runs resume from their last checkpoints); rerunning resumes the study.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import optuna
import pandas as pd
import torch
import yaml

from adni_lightning.atomic import output_dir, write_text
from adni_lightning.cli import CONFIG_DIR
from adni_lightning.commands.cv import (
    CHECKPOINT_NOTE,
    OOF_FILE,
    SPLIT_FILE,
    CrossValidationError,
    check_no_validation_choice,
    record_differences,
    report,
    run_fold,
)
from adni_lightning.data.split import (
    SPLIT_COLUMNS,
    check_fold_count,
    cross_validation_split,
    save_split,
    split_subjects,
)
from adni_lightning.errors import OptionError
from adni_lightning.evaluation.metrics import frame_metrics, metric_names
from adni_lightning.evaluation.report import markdown_table
from adni_lightning.run import Run
from adni_lightning.search_space import Dimension, load_space, suggest, values
from adni_lightning.study import FOLDER, Search, Worker, file_lock, open_storage

log = logging.getLogger(__name__)

DEFAULT_SPACE = CONFIG_DIR / "search" / "synthetic.yaml"
CONFIG_FILE = "tune_config.yaml"
INNER_SPLIT = "inner_split.csv"
CHOSEN_FILE = "chosen.csv"
DEFAULT_ARM = "default"
Sampler = Literal["tpe", "random"]
Pruner = Literal["none", "median", "hyperband"]


class TuneError(CrossValidationError):
    """The search cannot run as asked."""


def _threads(threads: int | None) -> int:
    """Train with ``threads`` torch threads, by default one per core this process may run on (its affinity: what
    ``taskset`` or SLURM's ``--cpus-per-task`` gives it).
    """
    given = len(os.sched_getaffinity(0))
    count = given if threads is None else threads
    if count < 1:
        raise OptionError(f"tune: --threads must be at least 1, got {count}")
    torch.set_num_threads(count)
    os.environ["OMP_NUM_THREADS"] = str(count)  # processes this one starts (loader workers) follow it
    return count


def _seed(*parts: object) -> int:
    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:8], 16)


def _sampler(kind: Sampler, seed: int, name: str) -> Any:
    """Trial number → the sampler for that trial, seeded by the run's seed, the search and the number."""
    if kind == "random":
        return lambda number: optuna.samplers.RandomSampler(seed=_seed(seed, name, number))
    return lambda number: optuna.samplers.TPESampler(seed=_seed(seed, name, number))


def _pruner(kind: Pruner, inner_folds: int) -> optuna.pruners.BasePruner:
    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=inner_folds)
    return optuna.pruners.NopPruner()


def _check_space(run: Run, space: list[Dimension]) -> None:
    """Parse the run with each end of every range before anything trains: a misspelt option fails now."""
    for end in (0, 1):
        run.derive("fit", {d.option: d.ends()[end] for d in space})


def _config_record(run: Run, space: list[Dimension], settings: dict[str, Any]) -> dict[str, Any]:
    """What every worker on one folder must search: the settings, the space and the configuration."""
    dims = [{k: v for k, v in vars(d).items() if v not in (None, (), False)} for d in space]
    return {"settings": settings, "space": json.loads(json.dumps(dims)), "config": run.configuration()}


def _check_same_search(root: Path, record: dict[str, Any]) -> None:
    """Save what the workers in ``root`` search once; refuse a worker that would search something else."""
    path = root / CONFIG_FILE
    differing = {key.split(".")[0] for key in record_differences(path, record)}
    if differing:
        parts = [k for k in ("settings", "space", "config") if k in differing]
        raise TuneError(
            f"tune: {root} holds a search with another {' and '.join(parts)} ({path}); a worker must run the "
            "same command: use another --root, or delete it"
        )


def _inner_split(run: Run, manifest: pd.DataFrame, subjects: set[str], inner_folds: int, path: Path) -> None:
    """Deal ``subjects`` into stratified inner folds; every other subject (the outer fold, the test split) is
    ``test`` (fold -1) in the file, so no inner run trains or validates on it.
    """
    spec = replace(run.datamodule.split_spec, folds=inner_folds, fold=0, file=str(path))
    inside = manifest["subject"].isin(subjects)
    dealt = split_subjects(manifest[inside], replace(spec, test_fraction=0.0))
    held = manifest.loc[~inside, ["image_id", "subject", "label"]].rename(columns={"label": "group"})
    held = held.assign(split="test", fold=-1)
    split = pd.concat([dealt[list(SPLIT_COLUMNS)], held[list(SPLIT_COLUMNS)]], ignore_index=True)
    check_fold_count(split, inner_folds, run.datamodule.classes, f"tune --inner_folds {inner_folds}")
    save_split(split, path, spec)


class _Objective:
    """A trial's score: the pooled out-of-fold ``metric`` of its inner folds, reported fold by fold for pruning."""

    def __init__(self, run: Run, space: list[Dimension], folder: Path, inner_folds: int, metric: str) -> None:
        self.run, self.space, self.folder, self.inner_folds, self.metric = run, space, folder, inner_folds, metric

    def __call__(self, trial: optuna.Trial) -> float:
        trial_run = self.run.derive("fit", suggest(trial, self.space))
        trial_dir = self.folder / str(trial.user_attrs[FOLDER])
        frames = []
        for fold in range(self.inner_folds):
            oof = trial_dir / f"fold_{fold}" / OOF_FILE
            if not oof.exists():
                run_fold(trial_run, trial_dir, self.inner_folds, fold, False, self.folder / INNER_SPLIT)
            frames.append(pd.read_csv(oof, dtype={"image_id": str, "subject": str}))
            score = frame_metrics(pd.concat(frames), self.run.datamodule.classes)[self.metric]
            if fold < self.inner_folds - 1:
                trial.report(score, fold)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"inner {self.metric} {score:.4f} after {fold + 1} fold(s)")
        log.info("tune: %s trial %d: inner %s %.4f", self.folder.name, trial.number, self.metric, score)
        return score


def _chosen_run(run: Run, choice: dict[str, Any], space: list[Dimension]) -> Run:
    return run.derive("fit", {d.option: choice[d.option] for d in space})


def _chosen(search: Search, space: list[Dimension]) -> dict[str, Any]:
    best = search.best()
    return {"trial": best.number, "score": best.value, **values(best.params, space)}


def _save_choice(chosen: Run, choice: dict[str, Any], path: Path) -> None:
    """The chosen configuration as a whole config file: ``fit --config path`` trains it."""
    config = chosen.configuration()
    header = f"# tune: trial {choice['trial']}, inner score {choice['score']:.4f}: a choice, not an estimate\n"
    write_text(path, header + yaml.safe_dump(config, sort_keys=False), "--root")


def _finish_fold(run: Run, root: Path, folder: Path, split: pd.DataFrame, folds: int, fold: int) -> None:
    """Outer fold ``fold`` of ``run`` in ``folder``, on the outer split of ``root``, unless it has finished."""
    if not (folder / f"fold_{fold}" / OOF_FILE).exists():
        test = bool((split["split"] == "test").any())
        run_fold(run, folder, folds, fold, test, root / SPLIT_FILE)


def _defaults(run: Run, root: Path, split: pd.DataFrame, folds: int, wait: bool) -> None:
    """The default configuration on the outer folds: the free folds (``wait``: and then those others hold)."""
    for k in range(folds):
        _job(root, f"default_{k}", wait, lambda k=k: _finish_fold(run, root, root / DEFAULT_ARM, split, folds, k))


def _job(root: Path, name: str, wait: bool, work: Any) -> None:
    """Run ``work`` unless another worker holds job ``name`` (or, with ``wait``, after it let go and left it undone)."""
    with file_lock(root / "locks" / f"{name}.lock", wait=wait) as mine:
        if mine:
            work()


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if not isinstance(value, str) else value


def _stability(chosen: pd.DataFrame, space: list[Dimension]) -> list[list[str]]:
    """Per option: how the outer folds' choices agree (the range of numbers; the most chosen category's share)."""
    rows = []
    for d in space:
        column = chosen[d.option]
        if d.kind == "categorical":
            texts = column.map(_cell)
            top = texts.value_counts()
            rows.append([d.option, f"{top.index[0]} in {top.iloc[0]} of {len(texts)} outer folds"])
        else:
            low, high = column.min(), column.max()
            spread = f" ({high / low:.3g}×)" if d.log and low > 0 else ""
            rows.append([d.option, f"{_cell(low)} … {_cell(high)}{spread}, median {_cell(column.median())}"])
    return rows


def _write_tune_report(root: Path, chosen: pd.DataFrame, space: list[Dimension], settings: dict[str, Any]) -> None:
    write_text(root / CHOSEN_FILE, chosen.to_csv(index=False), "--root")
    lines = [
        "# Nested hyper-parameter search",
        "",
        "Settings: " + ", ".join(f"{k} {v}" for k, v in settings.items()) + ".",
        "",
        (
            "Each outer fold's search saw its training subjects only (inner folds); its choice was refitted on them "
            "and scored on the outer fold, which chose nothing. The estimate, with the default configuration and "
            "the baseline on the same outer folds: `cv_report.md` (model `tuned`)."
        ),
        "",
        "## Chosen per outer fold",
        "",
        *markdown_table(
            ["outer fold", "trial", f"inner {settings['metric']}", *(d.option for d in space)],
            [
                [str(r["outer_fold"]), str(r["trial"]), f"{r['score']:.4f}", *(_cell(r[d.option]) for d in space)]
                for r in chosen.to_dict("records")
            ],
        ),
        "## Stability of the choice",
        "",
        *markdown_table(["option", "across outer folds"], _stability(chosen, space)),
    ]
    write_text(root / "tune_report.md", "\n".join(lines), "--root")


def tune(
    run: Run,
    space: Path | None = None,
    trials: int = 20,
    timeout: float | None = None,
    inner_folds: int = 3,
    outer_folds: int | None = None,
    root: Path | None = None,
    storage: str | None = None,
    sampler: Sampler = "tpe",
    pruner: Pruner = "none",
    metric: str = "bacc",
    threads: int | None = None,
    bootstrap: int = 2000,
) -> Path:
    """Run (or join, or resume) the search; returns its folder.

    Args:
        run: the configuration every trial starts from.
        space: search space YAML (default: the packaged configs/search/synthetic.yaml).
        trials: trials per search (completed or pruned), shared by all workers.
        timeout: seconds after which this worker starts no new trial.
        inner_folds: folds of the training subjects that score a trial.
        outer_folds: nested cross-validation: search within each of these folds (cv's), refit, score the held-out
            fold.
        root: output folder (default: <trainer.default_root_dir>/tune).
        storage: Optuna storage URL shared by the workers (default: the journal file DIR/study.journal).
        sampler: tpe or random.
        pruner: none, median or hyperband (on the inner folds' scores so far).
        metric: what a trial maximises: a metric of the cv report (bacc, auroc, f1, mcc, ...).
        threads: torch threads of this worker (default: the cores it may run on).
        bootstrap: bootstrap resamples (over subjects) for the nested report's CIs.
    """
    task = run.datamodule.task
    if task.regression:
        raise TuneError(
            f"tune: data.task {task.contract()} is a regression, and a trial is scored by a class metric: tune "
            "searches classification tasks only (compare a score task's configurations with cv)"
        )
    metrics = metric_names(run.datamodule.classes)
    if metric not in metrics:
        raise TuneError(f"tune: --metric {metric} is not one of {metrics}")
    if trials < 1 or inner_folds < 2 or (outer_folds is not None and outer_folds < 2):
        raise TuneError(
            f"tune: need --trials ≥ 1, --inner_folds ≥ 2 and --outer_folds ≥ 2, got {trials}, {inner_folds}, "
            f"{outer_folds}"
        )
    if bootstrap < 1:
        raise TuneError(f"tune: --bootstrap must be at least 1, got {bootstrap}")
    count = _threads(threads)
    dims = load_space(space or DEFAULT_SPACE)
    _check_space(run, dims)
    check_no_validation_choice(run)
    root = output_dir(Path(root) if root else run.root / "tune", "--root")
    settings = {
        "trials": trials,
        "inner_folds": inner_folds,
        "outer_folds": outer_folds,
        "metric": metric,
        "sampler": sampler,
        "pruner": pruner,
    }
    run.cohort()
    _check_same_search(root, _config_record(run, dims, settings))
    dm = run.datamodule
    manifest = dm.fill_cache()
    deadline = time.monotonic() + (timeout if timeout is not None else math.inf)
    with Worker(root) as worker:
        peers = worker.peers_on_host()
        if peers * count > (os.cpu_count() or 1):
            log.warning(
                "tune: %d workers on this machine with %d thread(s) each share %d cores: give each its own cores "
                "(--threads, taskset -c, srun --cpus-per-task)",
                peers,
                count,
                os.cpu_count(),
            )
        log.info("tune: worker %s trains with %d torch thread(s)", worker.name, count)
        if outer_folds:
            split = cross_validation_split(manifest, dm.split_spec, outer_folds, root / SPLIT_FILE, dm.classes)
            dealt = split["fold"] >= 0
            search_names = [f"outer_{k}" for k in range(outer_folds)]
            for k, name in enumerate(search_names):
                subjects = set(split.loc[dealt & (split["fold"] != k), "subject"])
                _inner_split(run, manifest, subjects, inner_folds, output_dir(root / name, "--root") / INNER_SPLIT)
        else:
            search_names = ["search"]
            inner = output_dir(root / "search", "--root") / INNER_SPLIT
            cross_validation_split(manifest, dm.split_spec, inner_folds, inner, dm.classes)
        storage_ = open_storage(storage, root)
        searches = []
        for name in search_names:
            optuna.create_study(storage=storage_, study_name=name, direction="maximize", load_if_exists=True)
            search = Search(
                name,
                storage_,
                trials,
                root / "locks" / f"{name}.lock",
                worker,
                _sampler(sampler, dm.split_spec.seed, name),
                _pruner(pruner, inner_folds),
            )
            searches.append((search, _Objective(run, dims, root / name, inner_folds, metric)))
        for search, objective in searches:  # first pass: never wait for another worker's trial
            search.run(objective, deadline, wait=False)
        if outer_folds:  # the default configuration needs no search: train its free folds meanwhile
            _defaults(run, root, split, outer_folds, wait=False)
        for search, objective in searches:
            search.run(objective, deadline, wait=True)
        if not outer_folds:
            choice = _chosen(searches[0][0], dims)
            _save_choice(_chosen_run(run, choice, dims), choice, root / "best_config.yaml")
            write_text(root / "trials.csv", searches[0][0].study().trials_dataframe().to_csv(index=False), "--root")
            print(
                f"tune: best trial {choice['trial']}, inner {metric} {choice['score']:.4f}: a choice made on these "
                f"subjects, not an estimate of its performance (--outer_folds gives one); config in "
                f"{root / 'best_config.yaml'}"
            )
            return root
        return _nested(run, root, manifest, split, searches, dims, settings, bootstrap)


def _nested(
    run: Run,
    root: Path,
    manifest: pd.DataFrame,
    split: pd.DataFrame,
    searches: Sequence[tuple[Search, _Objective]],
    space: list[Dimension],
    settings: dict[str, Any],
    bootstrap: int,
) -> Path:
    """Refit each outer fold's choice and train the default configuration on the same outer folds (each job taken by
    one worker), then write the nested report.
    """
    folds = len(searches)
    choices, refits = [], []
    for k, (search, _) in enumerate(searches):
        choice = _chosen(search, space)
        choices.append({"outer_fold": k, **choice})
        refits.append(_chosen_run(run, choice, space))
        _save_choice(refits[-1], choice, root / search.name / "chosen_config.yaml")
        write_text(root / search.name / "trials.csv", search.study().trials_dataframe().to_csv(index=False), "--root")
    for wait in (False, True):  # take the free refits; then wait for those other workers hold
        for k, chosen_run in enumerate(refits):
            _job(root, f"refit_{k}", wait, lambda r=chosen_run, k=k: _finish_fold(r, root, root, split, folds, k))
    _defaults(run, root, split, folds, wait=True)
    chosen = pd.DataFrame(choices)
    _write_tune_report(root, chosen, space, settings)
    dm = run.datamodule
    notes = [
        CHECKPOINT_NOTE,
        "tuned: each outer fold's configuration chosen by the inner cross-validation of its training subjects "
        "(tune_report.md), refitted on all of them; default: the configuration as given, on the same folds.",
    ]
    with file_lock(root / "locks" / "report.lock"):
        report(
            root,
            manifest,
            split,
            dm.classes,
            folds,
            True,
            bootstrap,
            dm,
            arms={"tuned": root, DEFAULT_ARM: root / DEFAULT_ARM},
            references=(DEFAULT_ARM,),
            notes=notes,
        )
    print(f"tune: nested estimate in {root / 'cv_report.md'}; choices in {root / 'tune_report.md'}")
    return root


COMMAND = tune
