"""Which brain structures drive a prediction: structure occlusion and Integrated Gradients for a checkpoint.

``python -m adni_lightning interpret [--config FILE ...] --ckpt_path C [--split val|test|all] [--out DIR]
[--ig_steps N] [--max_images N] [overrides]`` is ``predict`` over the chosen split with an
:class:`~adni_lightning.interpret.callback.Interpreter` added: the same config and ``--data.*``/``--trainer.*``
overrides as ``fit``, and every check, restore and device placement of ``predict`` (the checkpoint's data contract and
model shapes are compared before anything is written; a checkpoint whose preprocessing differs from the config's is
read with the checkpoint's, one console line per option, as ``predict`` does). Each image of the split is explained:

- **structure occlusion** (label maps only): for every FreeSurfer structure in the image (left and right apart)
  and every class, ``delta_p`` = the class probability with the structure *removed* minus the probability of the
  intact image. Removed = its voxels set to background (compact index 0) in the compact label volume before
  the one-hot channels are made, so it vanishes from every channel. Rows in ``structure_importance.csv``; the
  mean per class and structure (and left+right summed), with a 95% bootstrap interval over subjects, ranked by
  absolute mean, in ``structure_ranking.csv`` and ``structure_ranking*.png``. A big structure's removal moves
  the output in proportion to its size, so the ranking also gives the effect per voxel (``rank_per_voxel``).
- **voxel attribution**: Integrated Gradients of the predicted class's probability with respect to the network
  input (baseline: all background), summed over channels, mapped back onto the source file's voxel grid from the
  geometry recorded with the image's cache entry (``attributions/<image_id>_ig.nii.gz``, the file's affine and
  shape: overlay it on the subject's own label map) and averaged per class over correctly classified images at
  network resolution (``mean_attribution_<class>.nii.gz`` over ``reference_<class>.nii.gz``, and
  ``mean_attribution_<class>.png``).

A score task's model (``data.task.label score``, a regression) is explained with its one output, ``score``: ``delta_p``
is the change of the predicted score (in its units, e.g. MMSE points) when the structure is removed, IG attributes
the predicted score, and the mean map (``mean_attribution_score.nii.gz``) is over every image explained; ``images.csv``
gives each image's ``target`` and ``prediction`` in place of the probabilities.

``images.csv`` lists each image's probabilities, IG's convergence delta and the seconds each method took;
``predictions.csv`` and ``predictions_by_subject.csv`` are ``predict``'s, for the images scored. The figures also go
to ``DIR/tensorboard`` (never the training run's own event folder). ``--max_images N`` scores only the batches that
hold the first N images of the split (``trainer.limit_predict_batches``) and explains those N. ``DIR`` is the
command's own: it must be new, empty, or an earlier ``interpret``'s output (marked by the file
``.adni_lightning_interpret``, whose files are replaced); a folder holding other files is refused, so a user's
``images.csv`` is never overwritten. Needs Captum for voxel attribution (``pip install 'adni_lightning[interpret]'``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal, get_args

from adni_lightning.interpret.callback import MARKER, NO_OCCLUSION, Interpreter, InterpretError
from adni_lightning.prediction_writer import PredictionWriter
from adni_lightning.run import Run

__all__ = ["MARKER", "NO_OCCLUSION", "InterpretError", "interpret"]

Split = Literal["val", "test", "all"]
SPLITS: tuple[str, ...] = get_args(Split)


def interpret(
    run: Run,
    ckpt_path: Path,
    split: Split = "val",
    out: Path | None = None,
    ig_steps: int = 32,
    max_images: int | None = None,
    chunk: int = 16,
    top: int = 10,
    bootstrap: int = 2000,
) -> Path:
    """Explain the checkpoint's predictions on ``split``; returns the output folder.

    Args:
        run: the configuration the checkpoint was trained with.
        ckpt_path: the trained model's checkpoint (.ckpt).
        split: images to explain: the run's val or test side (from its split.csv), or every image of the CSV.
        out: output folder: new, empty or an earlier interpret's (default: <trainer.default_root_dir>/interpret).
        ig_steps: Integrated Gradients steps per image (Riemann sum); 0 skips voxel attribution.
        max_images: explain only the first N images of the split (default: all).
        chunk: volumes per forward pass (occluded copies, IG steps): memory against speed.
        top: structures per class in the bar charts.
        bootstrap: bootstrap resamples (over subjects) for the ranking's 95% intervals.
    """
    if split not in SPLITS:
        raise InterpretError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    if ig_steps < 0 or chunk < 2 or (max_images is not None and max_images < 1) or top < 1 or bootstrap < 1:
        raise InterpretError("--ig_steps must be >= 0, --chunk >= 2, --max_images, --top and --bootstrap >= 1")
    out = Path(out) if out else run.root / "interpret"
    interpreter = Interpreter(out, ig_steps, max_images, chunk, top, bootstrap, split_option="--split")
    options: dict[str, object] = {
        "ckpt_path": str(ckpt_path),
        "data.predict_split": split,
        "trainer.inference_mode": False,  # IG needs autograd: the run predicts under no_grad, IG turns it back on
        "trainer.logger": False,  # its figures go to <out>/tensorboard
    }
    predict = run.derive("predict", options)
    if max_images is not None:
        # Set on the trainer, not as an option: the parser reads --trainer.limit_predict_batches 1 as 1.0, all batches.
        predict.trainer.limit_predict_batches = math.ceil(max_images / predict.datamodule.loader.batch_size)
    dm = predict.datamodule
    dm.trainer = predict.trainer  # the split file sits in the run folder
    if split != "all" and not dm.split_path.is_file():
        raise InterpretError(
            f"--split {split}: no split file {dm.split_path} (fit writes it into the run folder): "
            "pass the run's --trainer.default_root_dir or --data.split.file"
        )
    predict.execute([PredictionWriter(str(out / "predictions.csv")), interpreter])
    return out


COMMAND = interpret
