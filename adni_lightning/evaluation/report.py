"""The cross-validation report: the files a reviewer reads and the data behind them.

Reviewers reject a single accuracy: they ask for the spread over folds, an interval for the pooled estimate
that respects repeated visits of one subject, figures at subject level and at first visits (no subject counted
twice), a paired comparison with the baseline, per-class rates, the sample size, and an honest note when
folds are missing; and whether the probabilities can be taken at their word (calibration, with a temperature
fitted honestly, i.e. cross-fitted over the folds). :func:`write_cv_report` writes all of it from one out-of-fold
predictions frame, so the numbers in the text are the numbers in the CSVs. A regression frame (a clinical score or
age: ``target`` and ``prediction`` columns) gets the same report with MAE, RMSE, R² and Pearson r, a
predicted-vs-true scatter in place of the confusion matrices, and no calibration (there are no probabilities).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import confusion_matrix

from adni_lightning.atomic import atomic_path, output_dir, write_text
from adni_lightning.evaluation.calibration import (
    CALIBRATION_FILE,
    DEFAULT_BINS,
    apply_temperatures,
    at_search_bound,
    bootstrap_calibration,
    calibration_metrics,
    cross_fitted_temperatures,
    fit_temperature,
    reliability_table,
    save_temperature,
)
from adni_lightning.evaluation.metrics import (
    HEADLINE,
    PER_CLASS,
    PREDICTION,
    REGRESSION,
    TRUTH,
    bootstrap_samples,
    first_visits,
    fold_table,
    frame_metrics,
    interval_table,
    is_regression,
    paired_difference,
    paired_parts,
    prob_columns,
    subject_level,
)
from adni_lightning.figures import draw_confusion
from adni_lightning.vocabulary import ClassName

LEVELS = ("image", "subject", "first visit")
#: The option that moves the report (``cv --root``).
OPTION = "--root"
NAMES = {
    "bacc": "balanced accuracy",
    "acc": "accuracy",
    "f1": "macro F1",
    "auroc": "macro AUROC (one-vs-rest)",
    "mcc": "MCC",
    "sens": "sensitivity",
    "spec": "specificity",
    "ppv": "PPV",
    "npv": "NPV",
    "mae": "MAE",
    "rmse": "RMSE",
    "r2": "R²",
    "r": "Pearson r",
}
#: What a paired difference of each regression metric means, by its sign.
REGRESSION_SIGNS = (
    "Δ MAE and Δ RMSE below 0: the model errs less than the reference (better); Δ R² and Δ r above 0: it explains "
    "more of the score (better)."
)
NO_CALIBRATION = (
    "No calibration section and no temperature: they concern class probabilities, and a regression model predicts "
    "a score."
)
#: The ``scaling`` of a row of the calibration files: the model's own probabilities, or cross-fitted temperatures.
UNSCALED, SCALED = "none", "temperature (cross-fitted)"
CALIBRATION_METRICS = ("ece", "brier", "nll")


def fmt(x: float) -> str:
    """A figure with three decimals; ``n/a`` where it is undefined."""
    return "n/a" if pd.isna(x) else f"{x:.3f}"


def _numbers(values: Sequence[int]) -> str:
    return ", ".join(str(v) for v in values)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """The lines of a markdown table, and a blank line after it."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows] + [""]


def interval(ci: pd.DataFrame, metric: str, n_resamples: int) -> str:
    """``estimate [low, high]``, with the count of valid resamples when some were left out."""
    row = ci[ci["metric"] == metric].iloc[0]
    text = f"{fmt(row['estimate'])} [{fmt(row['ci_low'])}, {fmt(row['ci_high'])}]"
    return text if row["n_valid"] == n_resamples else f"{text} ({int(row['n_valid'])}/{n_resamples} resamples)"


class _Bootstraps:
    """Each model's bootstrap distribution per level, computed once for its CIs and its paired differences.

    Equal to :func:`bootstrap_ci` and :func:`paired_difference`: the draws depend only on the subjects and the
    seed, so two models on the same images share them.
    """

    def __init__(
        self, levels: dict[str, pd.DataFrame], classes: Sequence[ClassName], n_resamples: int, seed: int
    ) -> None:
        self.levels, self.classes, self.n_resamples, self.seed = levels, classes, n_resamples, seed
        self._cache: dict[tuple[str, str], tuple[dict[str, float], pd.DataFrame]] = {}

    def _get(self, level: str, model: str) -> tuple[dict[str, float], pd.DataFrame]:
        if (level, model) not in self._cache:
            part = self.levels[level]
            part = part[part["model"] == model]
            samples = bootstrap_samples(part, self.classes, self.n_resamples, self.seed)
            self._cache[level, model] = frame_metrics(part, self.classes), samples
        return self._cache[level, model]

    def ci(self, level: str, model: str) -> pd.DataFrame:
        return interval_table(*self._get(level, model))

    def difference(self, level: str, model: str, reference: str, metrics: Sequence[str]) -> pd.DataFrame:
        paired_parts(self.levels[level], model, reference)  # the same images, hence the same draws
        (point_m, samples_m), (point_r, samples_r) = self._get(level, model), self._get(level, reference)
        return interval_table({m: point_m[m] - point_r[m] for m in metrics}, samples_m[metrics] - samples_r[metrics])


def missing_text(missing_folds: Sequence[int]) -> str:
    """``fold 2 is not finished`` / ``folds 2, 4 are not finished``."""
    verb = "folds {} are" if len(missing_folds) > 1 else "fold {} is"
    return f"{verb.format(_numbers(missing_folds))} not finished"


def mark_missing(table: pd.DataFrame, missing_folds: Sequence[int]) -> pd.DataFrame:
    """A per-fold table (``model``, ``fold``: fold numbers, then summaries such as ``mean``/``sd``) with a ``note``
    column: a row per missing fold of each model that has fold rows, reading ``not finished`` (no metrics), and on
    the summary rows the folds they leave out.
    """
    if not len(missing_folds):
        return table.assign(note="")
    blocks = []
    for model, part in table.groupby("model", sort=False):
        per_fold = part["fold"].astype(str).str.fullmatch(r"\d+")
        folds = part[per_fold].assign(note="")
        if per_fold.any():
            absent = pd.DataFrame({"model": model, "fold": list(missing_folds), "note": "not finished"})
            folds = pd.concat([folds, absent]).sort_values("fold", key=lambda f: f.astype(int))
        summary = part[~per_fold].assign(note=f"over the finished folds only: {missing_text(missing_folds)}")
        blocks.append(pd.concat([folds, summary]))
    return pd.concat(blocks, ignore_index=True)


def _mean_sd(folds: pd.DataFrame, metric: str) -> str:
    column = folds.set_index("fold")[metric]
    return f"{fmt(column['mean'])} ± {fmt(column['sd'])}"


def _covered(frame: pd.DataFrame) -> str:
    """The folds present, per model where the models differ."""
    per_model: dict[Any, str] = {  # the model column's values, as read
        model: _numbers(sorted(part["fold"].unique())) for model, part in frame.groupby("model")
    }
    if len(set(per_model.values())) == 1:
        return f"folds {next(iter(per_model.values()))} only"
    return "; ".join(f"folds {folds} for `{model}`" for model, folds in per_model.items())


def _levels(frame: pd.DataFrame, classes: Sequence[ClassName]) -> dict[str, pd.DataFrame]:
    return {"image": frame, "subject": subject_level(frame, classes), "first visit": first_visits(frame)}


def _coverage(model: str, part: pd.DataFrame) -> list[str]:
    """A model's row start in a report's data table: its folds, images, subjects and first visits."""
    folds = _numbers(sorted(part["fold"].unique()))
    return [f"`{model}`", folds, str(len(part)), str(part["subject"].nunique()), str(len(first_visits(part)))]


def _data_section(frame: pd.DataFrame, classes: Sequence[ClassName], models: Sequence[str]) -> list[str]:
    rows = []
    for model in models:
        part = frame[frame["model"] == model]
        per_class = part["group"].value_counts()
        rows.append([*_coverage(model, part), " / ".join(str(per_class.get(c, 0)) for c in classes)])
    header = ["model", "folds", "images", "subjects", "first visits", f"images {' / '.join(classes)}"]
    return ["## Data", "", *markdown_table(header, rows)]


def _model_section(
    model: str, classes: Sequence[ClassName], folds: dict[str, pd.DataFrame], boot: _Bootstraps
) -> list[str]:
    folds = {level: table[table["model"] == model] for level, table in folds.items()}
    cis = {level: boot.ci(level, model) for level in LEVELS}
    n = boot.n_resamples
    header = [
        "metric",
        *(f"{level}: {kind}" for level in LEVELS for kind in ("mean ± sd over folds", "pooled OOF [95% CI]")),
    ]
    rows = [
        [NAMES[m], *(cell for level in LEVELS for cell in (_mean_sd(folds[level], m), interval(cis[level], m, n)))]
        for m in HEADLINE
    ]
    per_class = [[c, *(interval(cis["image"], f"{kind}_{c}", n) for kind in PER_CLASS)] for c in classes]
    return [
        f"## Model `{model}`",
        "",
        *markdown_table(header, rows),
        "Per class, image level, pooled OOF [95% CI]:",
        "",
        *markdown_table(["class", *(NAMES[kind] for kind in PER_CLASS)], per_class),
    ]


def _paired_section(
    frame: pd.DataFrame,
    classes: Sequence[ClassName],
    reference: str,
    boot: _Bootstraps,
    metrics: Sequence[str] = ("bacc", "auroc"),
    titles: Sequence[str] = ("Δ balanced accuracy [95% CI]", "Δ macro AUROC [95% CI]"),
    signs: str = "",
) -> list[str]:
    explained = "Difference model − reference; each resample draws the same subjects for both models."
    lines = [f"## Paired differences vs `{reference}`", "", f"{explained} {signs}".rstrip(), ""]
    metrics, rows = list(metrics), []
    for model in sorted(set(frame["model"]) - {reference}):
        pair = frame[frame["model"].isin([model, reference])]
        shared = set.intersection(*(set(part["image_id"]) for _, part in pair.groupby("model")))
        if len(pair) == 2 * len(shared):
            diffs = {level: boot.difference(level, model, reference, metrics) for level in LEVELS}
        else:
            lines += [
                (
                    f"`{model}` and `{reference}` differ in the images they cover: "
                    f"compared on the {len(shared)} images both predicted."
                ),
                "",
            ]
            diffs = {
                level: paired_difference(part, model, reference, classes, metrics, boot.n_resamples, boot.seed)
                for level, part in _levels(pair[pair["image_id"].isin(shared)], classes).items()
            }
        rows += [
            [f"`{model}` − `{reference}`", level, *(interval(diffs[level], m, boot.n_resamples) for m in metrics)]
            for level in LEVELS
        ]
    return lines + markdown_table(["comparison", "level", *titles], rows)


def _truth(part: pd.DataFrame, classes: Sequence[ClassName]) -> np.ndarray:
    """``group`` as indices into ``classes``."""
    return part["group"].map({c: i for i, c in enumerate(classes)}).to_numpy(int)


def _confusion_figure(frame: pd.DataFrame, classes: Sequence[ClassName], models: Sequence[str], caption: str) -> Figure:
    """Pooled image-level confusion matrices, one panel per model: counts, shaded by row-normalised rate; a
    ``caption`` above them (the missing folds) when given.
    """
    fig = Figure(figsize=(3.4 * len(models), 3.4 + 0.4 * bool(caption)), dpi=100)  # no pyplot: the user's backend
    if caption:
        fig.suptitle(caption, color="firebrick", fontsize=9, wrap=True)
    for ax, model in zip(fig.subplots(1, len(models), squeeze=False)[0], models):
        part = frame[frame["model"] == model]
        counts = confusion_matrix(
            _truth(part, classes), part[prob_columns(classes)].to_numpy().argmax(axis=1), labels=np.arange(len(classes))
        )
        draw_confusion(ax, counts, classes)
        ax.set_title(f"{model} ({len(part)} images)")
    fig.tight_layout()
    return fig


class _Calibration:
    """Each model's pooled out-of-fold calibration, and that of ``scaled_model`` after cross-fitted temperature
    scaling: fold ``k`` scaled with a temperature fitted on the other folds only (needs two finished folds).

    ``temperatures`` are the cross-fitted ones by fold; ``final`` is the temperature fitted on all of
    ``scaled_model``'s out-of-fold predictions, the one ``predict --calibration`` applies to new cohorts.
    """

    def __init__(
        self, frame: pd.DataFrame, classes: Sequence[ClassName], scaled_model: str | None, n_resamples: int, seed: int
    ) -> None:
        probs = prob_columns(classes)
        self.classes, self.n_resamples, self.seed = classes, n_resamples, seed
        self.parts: dict[tuple[Any, str], pd.DataFrame] = {
            (model, UNSCALED): part for model, part in frame.groupby("model", sort=True)
        }
        self.temperatures: dict[int, float] = {}
        self.final: float | None = None
        self.scaled_model = scaled_model if scaled_model in set(frame["model"]) else None
        if self.scaled_model is not None:
            part = self.parts[self.scaled_model, UNSCALED]
            truth, proba = _truth(part, classes), part[probs].to_numpy(float)
            self.final = fit_temperature(truth, proba)
            if part["fold"].nunique() > 1:
                self.temperatures = cross_fitted_temperatures(truth, proba, part["fold"].to_numpy())
                scaled = part.copy()
                scaled[probs] = apply_temperatures(proba, part["fold"].to_numpy(), self.temperatures)
                self.parts[self.scaled_model, SCALED] = scaled
        self._samples = {key: self._bootstrap(part) for key, part in self.parts.items()}

    def _bootstrap(self, part: pd.DataFrame) -> tuple[dict[str, float], pd.DataFrame]:
        truth, proba = _truth(part, self.classes), part[prob_columns(self.classes)].to_numpy(float)
        samples = bootstrap_calibration(truth, proba, part["subject"], self.n_resamples, self.seed)
        return calibration_metrics(truth, proba), samples

    def table(self) -> pd.DataFrame:
        """``model, scaling, metric, estimate, ci_low, ci_high, n_valid``; with a scaled model, its paired change
        ``after − before`` (the same resamples for both).
        """
        tables = [
            interval_table(*values).assign(model=model, scaling=scaling)
            for (model, scaling), values in self._samples.items()
        ]
        if (self.scaled_model, SCALED) in self._samples:
            (after, after_samples), (before, before_samples) = (
                self._samples[self.scaled_model, scaling] for scaling in (SCALED, UNSCALED)
            )
            change = {m: after[m] - before[m] for m in CALIBRATION_METRICS}
            tables.append(
                interval_table(change, after_samples - before_samples).assign(
                    model=self.scaled_model, scaling=f"{SCALED} − {UNSCALED}"
                )
            )
        out = pd.concat(tables, ignore_index=True)
        return out[["model", "scaling", *out.columns.drop(["model", "scaling"])]]

    def reliability(self) -> pd.DataFrame:
        """:func:`reliability_table` per model and scaling."""
        tables = [
            reliability_table(
                _truth(part, self.classes), part[prob_columns(self.classes)].to_numpy(float), self.classes
            ).assign(model=model, scaling=scaling)
            for (model, scaling), part in self.parts.items()
        ]
        out = pd.concat(tables, ignore_index=True)
        return out[["model", "scaling", *out.columns.drop(["model", "scaling"])]]

    def save(self, path: Path) -> None:
        """The temperature for new cohorts, with the folds it was fitted on and the cross-fitted ones."""
        assert self.final is not None, "no temperature without a scaled model"  # both are set together in __init__
        part = self.parts[self.scaled_model, UNSCALED]
        fitted_on = (
            f"cv out-of-fold predictions of {self.scaled_model}, folds {_numbers(sorted(part['fold'].unique()))}"
        )
        save_temperature(path, self.final, self.classes, fitted_on, len(part), self.temperatures)


def _calibration_section(calibration: _Calibration, table: pd.DataFrame, missing_folds: Sequence[int]) -> list[str]:
    n = calibration.n_resamples
    rows = [
        [f"`{model}`", str(scaling), *(interval(part, m, n) for m in CALIBRATION_METRICS)]
        for (model, scaling), part in table.groupby(["model", "scaling"], sort=False)
    ]
    lines = [
        "## Calibration",
        "",
        (
            f"Image level, pooled OOF: expected calibration error over {DEFAULT_BINS} equal-count bins of the "
            "top-label confidence (ECE), Brier score (squared error summed over the classes, 0 to 2) and negative "
            "log-likelihood (NLL); lower is better. 95% CIs from the same subject-bootstrap resamples as above "
            "(ECE is biased upwards in small samples, resamples with repeated subjects the more: its interval tends "
            "to sit above its estimate). "
            "Per-class reliability diagrams: `cv_reliability.png` (data in `cv_reliability.csv`; "
            "these figures in `cv_calibration.csv`)."
        ),
        "",
        *markdown_table(["model", "scaling", "ECE [95% CI]", "Brier [95% CI]", "NLL [95% CI]"], rows),
    ]
    model, final = calibration.scaled_model, calibration.final
    if model is None or final is None:  # set together: a temperature is fitted for the scaled model
        return lines
    if calibration.temperatures:
        per_fold = ", ".join(f"fold {k}: {t:.3f}" for k, t in calibration.temperatures.items())
        lines += [
            (
                f"Temperature scaling of `{model}` is cross-fitted: each fold's predictions are divided (as logits) by "
                f"a temperature fitted on the other folds' out-of-fold predictions only, so no fold chooses its own "
                f"({per_fold}). The temperatures are held fixed in the resamples: the noise of their fit is not in "
                "the intervals. A temperature changes no image's predicted class, so the metrics above other than "
                "AUROC are those of the scaled model too."
            ),
            "",
        ]
    else:
        lines += [f"Temperature scaling of `{model}` needs two finished folds to be cross-fitted: not shown.", ""]
    scope = f" (the finished folds only: {missing_text(missing_folds)})" if len(missing_folds) else ""
    bound = (
        " It lies at an end of the search range (0.05 to 20): the probabilities are nearly uninformative "
        "(T = 20) or far too timid (T = 0.05), and no temperature repairs that."
        if at_search_bound(final)
        else ""
    )
    lines += [
        (
            f"For new cohorts: T = {final:.3f}, fitted on all out-of-fold predictions of `{model}`{scope}, "
            f"is saved in `{CALIBRATION_FILE}`; `predict --calibration {CALIBRATION_FILE}` applies it.{bound}"
        ),
        "",
    ]
    return lines


#: Line colours of the figures: matplotlib's own cycle without its red, which marks a partial report's caption.
LINE_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")


def reliability_figure(reliability: pd.DataFrame, classes: Sequence[ClassName], caption: str) -> Figure:
    """One reliability diagram per class (one vs rest): observed frequency against mean predicted probability per
    equal-count bin, a line per model and scaling; calibrated models lie on the diagonal.
    """
    fig = Figure(figsize=(3.4 * len(classes), 3.6 + 0.4 * bool(caption)), dpi=100)
    if caption:
        fig.suptitle(caption, color="firebrick", fontsize=9, wrap=True)
    for ax, name in zip(fig.subplots(1, len(classes), squeeze=False)[0], classes):
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        series = reliability[reliability["class"] == name].groupby(["model", "scaling"])
        for ((model, scaling), part), colour in zip(series, itertools.cycle(LINE_COLOURS)):
            label = model if scaling == UNSCALED else f"{model}, {scaling}"
            ax.plot(part["mean_probability"], part["frequency"], marker="o", markersize=3, label=label, color=colour)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel=f"mean predicted p({name})", ylabel="observed frequency", title=name)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def write_cv_report(
    out_dir: Path,
    frame: pd.DataFrame,
    classes: Sequence[ClassName],
    reference_model: str | None = None,
    missing_folds: Sequence[int] = (),
    notes: Sequence[str] = (),
    *,
    n_resamples: int = 2000,
    seed: int = 0,
    scaled_model: str | None = None,
    other_references: Sequence[str] = (),
    target: str = "score",
) -> dict[str, Path]:
    """Write ``cv_metrics.csv``, ``oof_predictions.csv``, ``cv_report.md``, ``cv_report.png`` and the calibration
    files ``cv_calibration.csv``, ``cv_reliability.csv``, ``cv_reliability.png`` to ``out_dir``; for a regression
    frame (:func:`~adni_lightning.evaluation.metrics.is_regression`) the first three and ``cv_scatter.png``, with
    ``target`` naming the score (``classes`` and ``scaled_model`` are not used).

    ``cv_metrics.csv`` is the image-level :func:`fold_table`, each missing fold marked (:func:`mark_missing`), as
    in the report's banner and the figures' captions. Each file is written atomically: concurrent ``cv --fold K``
    processes each leave whole files. The paired section compares every other model with ``reference_model`` (a
    ValueError if it is given but absent), and a section per model of ``other_references`` compares the others
    with it. With ``scaled_model`` among the models, its calibration is also shown after cross-fitted temperature
    scaling, and the temperature fitted on all its out-of-fold predictions is saved in :data:`CALIBRATION_FILE`.
    Returns the paths by key ``metrics``, ``predictions``, ``report``, ``figure``, ``calibration``,
    ``reliability``, ``reliability_figure`` (and ``temperature``).
    """
    models = sorted(frame["model"].unique())
    if reference_model is not None and reference_model not in models:
        raise ValueError(f"reference model {reference_model!r} is not among the models {models}")
    if is_regression(frame):
        return _write_regression_report(
            out_dir, frame, reference_model, missing_folds, notes, n_resamples, seed, other_references, target
        )
    out_dir = output_dir(out_dir, OPTION)
    paths = {
        "metrics": out_dir / "cv_metrics.csv",
        "predictions": out_dir / "oof_predictions.csv",
        "report": out_dir / "cv_report.md",
        "figure": out_dir / "cv_report.png",
        "calibration": out_dir / "cv_calibration.csv",
        "reliability": out_dir / "cv_reliability.csv",
        "reliability_figure": out_dir / "cv_reliability.png",
    }
    levels = _levels(frame, classes)
    folds = {level: fold_table(part, classes) for level, part in levels.items()}
    boot = _Bootstraps(levels, classes, n_resamples, seed)
    write_text(paths["metrics"], mark_missing(folds["image"], missing_folds).to_csv(index=False), OPTION)
    write_text(paths["predictions"], frame.to_csv(index=False), OPTION)
    calibration = _Calibration(frame, classes, scaled_model, n_resamples, seed)
    calibration_table, reliability = calibration.table(), calibration.reliability()
    note = f"over the finished folds only: {missing_text(missing_folds)}" if len(missing_folds) else ""
    write_text(paths["calibration"], calibration_table.assign(note=note).to_csv(index=False), OPTION)
    write_text(paths["reliability"], reliability.to_csv(index=False), OPTION)
    if calibration.scaled_model is not None:
        paths["temperature"] = out_dir / CALIBRATION_FILE
        calibration.save(paths["temperature"])

    lines = ["# Cross-validated evaluation", ""]
    caption = f"{missing_text(missing_folds)}: these figures cover {_covered(frame)}" if missing_folds else ""
    if caption:
        lines += [f"> **{caption}.**", ""]
    lines += [
        (
            f"Classes: {', '.join(classes)}. Confidence intervals are {n_resamples}-resample percentile bootstrap "
            f"intervals over subjects (seed {seed}): each resample draws subjects with replacement and keeps all "
            "images of each drawn subject. Resamples where a metric is undefined (e.g. AUROC without every class) "
            "are left out and their count shown. mean ± sd is over folds (sd with ddof=1). Levels: every image; "
            "subject (mean probability over a subject's images); first visits only. Undefined values read n/a "
            "(MCC reads 0, sklearn's convention)."
        ),
        "",
        *_data_section(frame, classes, models),
    ]
    for model in models:
        lines += _model_section(model, classes, folds, boot)
    references = [r for r in (reference_model, *other_references) if r is not None and r in models]
    for reference in references if len(models) > 1 else []:
        lines += _paired_section(frame, classes, reference, boot)
    lines += _calibration_section(calibration, calibration_table, missing_folds)
    if notes:
        lines += ["## Notes", "", *(f"- {note}" for note in notes), ""]
    write_text(paths["report"], "\n".join(lines), OPTION)
    with atomic_path(paths["figure"], OPTION) as tmp:
        _confusion_figure(frame, classes, models, caption).savefig(tmp, format="png")
    with atomic_path(paths["reliability_figure"], OPTION) as tmp:
        reliability_figure(reliability, classes, caption).savefig(tmp, format="png")
    return paths


def _regression_data_section(frame: pd.DataFrame, models: Sequence[str], target: str) -> list[str]:
    rows = []
    for model in models:
        part = frame[frame["model"] == model]
        truth = part[TRUTH]
        spread = f"{fmt(truth.mean())} ± {fmt(truth.std(ddof=1))} ({fmt(truth.min())} to {fmt(truth.max())})"
        rows.append([*_coverage(model, part), spread])
    header = ["model", "folds", "images", "subjects", "first visits", f"{target}: mean ± sd (range)"]
    return ["## Data", "", *markdown_table(header, rows)]


def _regression_model_section(model: str, folds: dict[str, pd.DataFrame], boot: _Bootstraps) -> list[str]:
    folds = {level: table[table["model"] == model] for level, table in folds.items()}
    cis = {level: boot.ci(level, model) for level in LEVELS}
    header = [
        "metric",
        *(f"{level}: {kind}" for level in LEVELS for kind in ("mean ± sd over folds", "pooled OOF [95% CI]")),
    ]
    rows = [
        [
            NAMES[m],
            *(
                cell
                for level in LEVELS
                for cell in (_mean_sd(folds[level], m), interval(cis[level], m, boot.n_resamples))
            ),
        ]
        for m in REGRESSION
    ]
    return [f"## Model `{model}`", "", *markdown_table(header, rows)]


def scatter_figure(frame: pd.DataFrame, models: Sequence[str], target: str, caption: str) -> Figure:
    """Predicted against true score of every out-of-fold image, one panel per model, on shared axes with the
    identity line (a perfect model lies on it); each title gives the pooled MAE and r.
    """
    fig = Figure(figsize=(3.6 * len(models), 3.8 + 0.4 * bool(caption)), dpi=100)
    if caption:
        fig.suptitle(caption, color="firebrick", fontsize=9, wrap=True)
    values = frame[[TRUTH, PREDICTION]].to_numpy(float)
    low, high = values.min(), values.max()
    margin = 0.05 * (high - low) or 1.0
    limits = (low - margin, high + margin)
    for ax, model, colour in zip(fig.subplots(1, len(models), squeeze=False)[0], models, itertools.cycle(LINE_COLOURS)):
        part = frame[frame["model"] == model]
        figures = frame_metrics(part, ())
        ax.plot(limits, limits, color="grey", linestyle=":", linewidth=1)
        ax.scatter(part[TRUTH], part[PREDICTION], s=8, alpha=0.6, color=colour)
        ax.set(xlim=limits, ylim=limits, xlabel=f"true {target}", ylabel=f"predicted {target}", aspect="equal")
        ax.set_title(f"{model}: MAE {fmt(figures['mae'])}, r {fmt(figures['r'])} ({len(part)} images)", fontsize=9)
    fig.tight_layout()
    return fig


def _write_regression_report(
    out_dir: Path,
    frame: pd.DataFrame,
    reference_model: str | None,
    missing_folds: Sequence[int],
    notes: Sequence[str],
    n_resamples: int,
    seed: int,
    other_references: Sequence[str],
    target: str,
) -> dict[str, Path]:
    """:func:`write_cv_report` of a regression frame."""
    models = sorted(frame["model"].unique())
    out_dir = output_dir(out_dir, OPTION)
    paths = {
        "metrics": out_dir / "cv_metrics.csv",
        "predictions": out_dir / "oof_predictions.csv",
        "report": out_dir / "cv_report.md",
        "scatter": out_dir / "cv_scatter.png",
    }
    levels = _levels(frame, ())
    folds = {level: fold_table(part, ()) for level, part in levels.items()}
    boot = _Bootstraps(levels, (), n_resamples, seed)
    write_text(paths["metrics"], mark_missing(folds["image"], missing_folds).to_csv(index=False), OPTION)
    write_text(paths["predictions"], frame.to_csv(index=False), OPTION)

    lines = ["# Cross-validated evaluation", ""]
    caption = f"{missing_text(missing_folds)}: these figures cover {_covered(frame)}" if missing_folds else ""
    if caption:
        lines += [f"> **{caption}.**", ""]
    lines += [
        (
            f"Regression of {target}. MAE and RMSE are in the units of {target} (lower is better); R² is the "
            "fraction of the variance of the true scores explained (1 is perfect, 0 is predicting their mean); r is "
            f"Pearson's correlation of prediction and truth. Confidence intervals are {n_resamples}-resample "
            f"percentile bootstrap intervals over subjects (seed {seed}): each resample draws subjects with "
            "replacement and keeps all images of each drawn subject. Resamples where a metric is undefined (R² or r "
            "of a constant score) are left out and their count shown. mean ± sd is over folds (sd with ddof=1). "
            "Levels: every image; subject (mean prediction and mean true score over a subject's images); first "
            "visits only. Predicted against true: `cv_scatter.png`."
        ),
        "",
        *_regression_data_section(frame, models, target),
    ]
    for model in models:
        lines += _regression_model_section(model, folds, boot)
    references = [r for r in (reference_model, *other_references) if r is not None and r in models]
    titles = [f"Δ {NAMES[m]} [95% CI]" for m in REGRESSION]
    for reference in references if len(models) > 1 else []:
        lines += _paired_section(frame, (), reference, boot, REGRESSION, titles, REGRESSION_SIGNS)
    lines += ["## Notes", "", *(f"- {note}" for note in (*notes, NO_CALIBRATION)), ""]
    write_text(paths["report"], "\n".join(lines), OPTION)
    with atomic_path(paths["scatter"], OPTION) as tmp:
        scatter_figure(frame, models, target, caption).savefig(tmp, format="png")
    return paths
