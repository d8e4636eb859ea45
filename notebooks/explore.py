# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: -jupytext.text_representation
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Exploring an ADNI FastSurfer download — the blog's data exploration done right
#
# The blog this template started from read the IDA CSV, opened one label map with `get_fdata()` (134 MB of
# float64 for a 256³ int16 file), drew its middle slices in grey (with the planes misnamed) and then split
# the *images* at random. This notebook does the same exploration the way the pipeline needs it:
#
# 1. parameters (and a synthetic cohort when there is no data),
# 2. the CSV: groups, subjects, visits, and why an image-level split leaks,
# 3. the subject-level split the training uses, with class balance and ages per side,
# 4. label maps in FreeSurfer colours, and why they are resampled by nearest neighbour only,
# 5. hippocampus and ventricle volumes per group — the signal the network should find,
# 6. learning curves of a finished run, read from its TensorBoard event files.
#
# It runs top to bottom headless; from the repository, after `make install` and `source .venv/bin/activate`:
#
# ```bash
# jupyter nbconvert --to notebook --execute notebooks/explore.ipynb --output-dir runs/notebook
# ```
#
# (the executed copy is `runs/notebook/explore.ipynb`; the kernel runs in `notebooks/`, so the default paths below
# are the repository's `data/synthetic` and `runs/synthetic`; `tests/test_notebook.py` runs this command).
# Without real data it uses a **synthetic** cohort: cartoon anatomy in the exact ADNI download format.
#
# The source of this notebook is `notebooks/explore.py` (jupytext percent format): edit that file, not the
# `.ipynb`, then regenerate the notebook with `jupytext --update --to ipynb notebooks/explore.py` (keeps the
# cell ids) or `jupytext --sync notebooks/explore.py`. `tests/test_notebook.py` fails when the two disagree.

# %% [markdown]
# ## 1. Parameters
#
# Set `ADNI_DATA_DIR` / `ADNI_RUN_DIR` in the environment (or edit this cell). `DATA_DIR` holds the IDA CSV
# and the `{Group}/{image_id}.nii_aseg_deep.mgz` files. `RUN_DIR` is **the one run** whose curves section 6
# draws: a `fit`'s `trainer.default_root_dir`, of which only `RUN_DIR/tensorboard` is read (never the events of
# `validate/`, `test/` or other runs below it; after `cv`, name one fold, e.g. `../runs/synthetic/cv/fold_0`).
# `CSV_PATH` is the IDA CSV when it is not `DATA_DIR/ADNI_1p5T_Filtered.csv`.

# %% tags=["parameters"]
import os
from pathlib import Path

DATA_DIR = os.environ.get("ADNI_DATA_DIR", "../data/synthetic")
RUN_DIR = os.environ.get("ADNI_RUN_DIR", "../runs/synthetic")  # the run section 6 reads: RUN_DIR/tensorboard
CSV_PATH = None  # the IDA export; None: DATA_DIR/ADNI_1p5T_Filtered.csv (adni_lightning.data.manifest.CSV_NAME)
# Cohort generated when DATA_DIR has no CSV: configs/synthetic.yaml's, so `fit` trains on what is explored here.
SYNTHETIC_SUBJECTS = int(os.environ.get("ADNI_SYNTH_SUBJECTS", "200"))
SYNTHETIC_SIZE = int(os.environ.get("ADNI_SYNTH_SIZE", "96"))
VAL_FRACTION, SPLIT_SEED = 0.2, 0  # SplitSpec's defaults: the split a default run draws
MAX_VOLUMES = 400  # section 5 reads at most this many label maps (one per subject)

# %% tags=["setup"]
# %matplotlib inline
import sys

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display

try:
    import adni_lightning
except ImportError:  # a checkout without `pip install -e .`: this notebook lives in <repo>/notebooks
    sys.path.insert(0, str(Path.cwd().parent))
    import adni_lightning

from adni_lightning.data.labels import FREESURFER_LUT, compact_colours, compact_lookup
from adni_lightning.data.manifest import CSV_NAME, ManifestSpec, build_manifest
from adni_lightning.data.split import SplitSpec, check_no_leak, split_subjects
from adni_lightning.data.volume_io import read_volume, to_canonical
from adni_lightning.synth import generate_cohort

print(f"python: {sys.executable}")
print(f"adni_lightning: {Path(adni_lightning.__file__).parent}")


def show(fig):
    """Display and close a figure, whatever matplotlib backend is active."""
    display(fig)
    plt.close(fig)


data_dir, run_dir = Path(DATA_DIR), Path(RUN_DIR)
csv_path = Path(CSV_PATH) if CSV_PATH else data_dir / CSV_NAME
if csv_path.is_file():
    print(f"using the cohort in {data_dir.resolve()}")
else:
    if CSV_PATH:
        raise FileNotFoundError(f"CSV_PATH {csv_path} not found")
    others = sorted(p.name for p in data_dir.glob("*.csv"))
    if others:
        raise FileNotFoundError(f"{csv_path} not found but {data_dir} holds {others}: set CSV_PATH")
    print(
        f"{csv_path} not found: generating a synthetic cohort of {SYNTHETIC_SUBJECTS} subjects at "
        f"{SYNTHETIC_SIZE}³ voxels in {data_dir.resolve()} (cartoon anatomy, real ADNI file format)"
    )
    generate_cohort(
        data_dir, subjects=SYNTHETIC_SUBJECTS, size=SYNTHETIC_SIZE, seed=0, workers=min(4, os.cpu_count() or 1)
    )

# %% [markdown]
# ## 2. The CSV
#
# One row per **image**. `Subject` (`site_S_number`) identifies the person; `Visit` says which scan of theirs
# it is (`sc` screening, `m06`, `m12`, …). The diagnosis `Group` is per row.

# %% tags=["csv"]
df = pd.read_csv(csv_path, dtype={"Image Data ID": str, "Subject": str})
display(df.head())

order = [g for g in ("CN", "MCI", "AD") if g in set(df["Group"])]
order += sorted(set(df["Group"]) - set(order))
per_group = pd.DataFrame(
    {
        "images": df["Group"].value_counts(),
        "subjects": df.groupby("Group")["Subject"].nunique(),
    }
).reindex(order)
per_group["images per subject"] = (per_group["images"] / per_group["subjects"]).round(2)
per_group.loc["total"] = [len(df), df["Subject"].nunique(), round(len(df) / df["Subject"].nunique(), 2)]
display(per_group)

visits = df.groupby("Subject").size()
display(visits.value_counts().sort_index().rename_axis("images per subject").to_frame("subjects"))
example = visits.idxmax()
print(f"subject {example} has {visits.max()} images:")
display(df.loc[df["Subject"] == example, ["Image Data ID", "Subject", "Group", "Age", "Visit", "Acq Date"]])


# %% [markdown]
# ### Why an image-level split leaks
#
# The blog split with `torch.utils.data.random_split(dataset, [0.8 n, 0.2 n])` over images. A subject with two
# scans then lands on both sides with probability 2 · 0.8 · 0.2 = 0.32: the validation set holds brains the
# network has already seen (same head size, same ventricles, same cortex), so validation accuracy measures
# memory, not diagnosis. Wen et al. (2020) found that more than half of the surveyed AD papers likely leaked
# this way. Count it on this CSV:


# %% tags=["leak"]
def naive_image_split(table, seed, train_fraction=0.8):
    """The blog's random_split over images → (subjects on both sides, val images with a sibling in train, val size)."""
    shuffled = np.random.default_rng(seed).permutation(len(table))
    n_train = int(train_fraction * len(table))
    train = table.iloc[shuffled[:n_train]]
    val = table.iloc[shuffled[n_train:]]
    both = set(train["Subject"]) & set(val["Subject"])
    return len(both), int(val["Subject"].isin(both).sum()), len(val)


several = int((visits > 1).sum())
both, leaked_images, n_val = naive_image_split(df, seed=0)
print(
    f"naive image-level 80/20 split: {both} of the {several} subjects with several images are on both sides; "
    f"{leaked_images} of its {n_val} validation images have a scan of the same brain in training"
)
draws = np.array([naive_image_split(df, seed) for seed in range(200)])
print(
    f"over 200 random draws: {draws[:, 0].mean():.1f} subjects on both sides on average "
    f"(min {draws[:, 0].min()}, max {draws[:, 0].max()}; expected 0.32 × {several} = {0.32 * several:.1f})"
)

# %% [markdown]
# ## 3. The subject-level split the training uses
#
# `build_manifest` validates every row (id, group, sex, age, file present and readable, same grid) and joins
# it to its file; `split_subjects` deals **subjects** (not images) to train/val within each diagnostic group,
# so class proportions match and every image of a subject stays on its subject's side. With the parameters
# above it is the split a default `fit` draws and saves to `RUN_DIR/split.csv`.

# %% tags=["split"]
manifest = build_manifest(ManifestSpec(data_dir=data_dir, csv_path=csv_path))
classes = [c for c in ("CN", "MCI", "AD") if c in set(manifest["label"])]
split = split_subjects(manifest, SplitSpec(val_fraction=VAL_FRACTION, test_fraction=0.0, seed=SPLIT_SEED))
rows = manifest.merge(split[["image_id", "split"]], on="image_id", validate="one_to_one")
sides = [s for s in ("train", "val", "test") if s in set(rows["split"])]

check_no_leak(split)  # raises SplitError if a subject had images on two sides
on_two_sides = int((rows.groupby("subject")["split"].nunique() > 1).sum())
print(f"subject-level split: {on_two_sides} subjects on more than one side (check_no_leak passed)")

images = pd.crosstab(rows["split"], rows["label"]).reindex(index=sides, columns=classes, fill_value=0)
people = rows.drop_duplicates("subject")
subjects = pd.crosstab(people["split"], people["label"]).reindex(index=sides, columns=classes, fill_value=0)
balance = pd.concat({"images": images, "subjects": subjects}, axis=1)
for side in sides:  # class shares per side, from subjects
    shares = subjects.loc[side] / subjects.loc[side].sum()
    balance.loc[side, ("subject share", "")] = " / ".join(f"{x:.0%}" for x in shares)
display(balance)

ages = rows.groupby(["split", "label"])["age"].agg(["count", "mean", "std", "min", "max"]).round(1)
display(ages.reindex(pd.MultiIndex.from_product([sides, classes], names=["split", "label"])))
display(pd.crosstab(rows["split"], rows["sex"], normalize="index").round(2).rename_axis("share of images"))

fig, ax = plt.subplots(figsize=(7, 3))
positions, data, labels = [], [], []
for i, label in enumerate(classes):
    for j, side in enumerate(sides):
        positions.append(i * (len(sides) + 1) + j)
        data.append(rows.loc[(rows["label"] == label) & (rows["split"] == side), "age"])
        labels.append(f"{label}\n{side}")
ax.boxplot(data, positions=positions, widths=0.7)
ax.set_xticks(positions, labels)
ax.set_ylabel("age (years)")
ax.set_title("age per group and side (one point per image)")
fig.tight_layout()
show(fig)

# %% [markdown]
# ## 4. Looking at label maps
#
# `aparc.DKTatlas+aseg.deep.mgz` is a **label map**: each voxel holds a FreeSurfer structure id (17 = left
# hippocampus, 53 = right hippocampus, 4/43 = lateral ventricles, 1002–1035 / 2002–2035 = DKT cortical
# parcels …). The ids are *names*, not intensities, so
#
# * a grey colour map is meaningless: brightness follows the id number, so the whole cortex (ids > 1000)
#   is white and the hippocampus (17) is as black as a ventricle (4) or the background (0);
# * they are drawn through the FreeSurfer colour table (`FREESURFER_LUT`, as `freeview` does).
#
# The file is stored on FastSurfer's conformed grid in **LIA** order (axis 0 → Left, 1 → Inferior,
# 2 → Anterior). The blog's `img[n // 2, :, :]`, titled "Axial", is therefore a *sagittal* slice, and its
# "Sagittal" is axial. `to_canonical` permutes/flips the axes (no resampling) to **RAS**, so below
# `vol[x]` is sagittal, `vol[:, y]` coronal, `vol[:, :, z]` axial, whatever the file's orientation. Images
# are shown in neurological convention (the subject's right on the right), superior/anterior up.

# %% tags=["slices"]
TO_COMPACT, COLOURS = compact_lookup(), compact_colours()
HIPPOCAMPUS, LATERAL_VENTRICLE = (17, 53), (4, 43)


def colour(ids):
    """FreeSurfer ids → RGB uint8 through the LUT (via the compact index); ids not in the table are black."""
    ids = np.asarray(ids)
    inside = (ids >= 0) & (ids < len(TO_COMPACT))
    index = TO_COMPACT[np.where(inside, ids, 0)]
    return np.where((inside & (index >= 0))[..., None], COLOURS[np.maximum(index, 0)], 0).astype(np.uint8)


def planes(vol, centre=None):
    """Sagittal, coronal and axial slices of a RAS array through ``centre`` (default: the middle), ready
    for ``imshow(..., origin="lower")``: superior (or anterior, for axial) up."""
    x, y, z = [n // 2 for n in vol.shape] if centre is None else centre
    return {"sagittal": vol[x, :, :].T, "coronal": vol[:, y, :].T, "axial": vol[:, :, z].T}


def aspects(zooms):
    """imshow aspect (row height / column width in mm) of each plane."""
    zx, zy, zz = zooms
    return {"sagittal": zz / zy, "coronal": zz / zx, "axial": zy / zx}


# One baseline scan per group.
examples = rows.drop_duplicates("subject").groupby("label").head(1).set_index("label").reindex(classes)
volumes = {}
for label, row in examples.iterrows():
    ids, affine = read_volume(row["path"])  # int16 in native byte order, not 134 MB of float64
    volumes[label] = to_canonical(ids, affine)  # (RAS array, voxel sizes)
first = next(iter(volumes.values()))[0]
print(f"stored as {ids.dtype} on a {ids.shape} grid, {np.unique(first).size} distinct ids in the first volume")

legend = [
    (17, "hippocampus (17 / 53)"),
    (18, "amygdala (18 / 54)"),
    (4, "lateral ventricle (4 / 43)"),
    (5, "inferior lateral ventricle (5 / 44)"),
    (2, "cerebral white matter (2 / 41)"),
    (1030, "cortex: one colour per DKT parcel"),
]
handles = [plt.Rectangle((0, 0), 1, 1, color=np.array(FREESURFER_LUT[i][1]) / 255) for i, _ in legend]

fig, axes = plt.subplots(len(volumes), 3, figsize=(9, 3 * len(volumes)), squeeze=False)
for r, (label, (vol, zooms)) in enumerate(volumes.items()):
    row = examples.loc[label]
    for c, (name, plane) in enumerate(planes(vol).items()):
        ax = axes[r, c]
        ax.imshow(colour(plane), origin="lower", aspect=aspects(zooms)[name], interpolation="nearest")
        ax.set_xticks([]), ax.set_yticks([])
        if r == 0:
            ax.set_title(f"{name} (mid-slice)")
    axes[r, 0].set_ylabel(f"{label}\n{row['image_id']}, {row['age']:.0f} y")
fig.legend(handles, [text for _, text in legend], loc="lower center", ncol=3, fontsize=8, frameon=False)
fig.tight_layout(rect=(0, 0.07, 1, 1))
show(fig)


# %% [markdown]
# The mid-sagittal slice runs between the hemispheres, away from the hippocampi. Slices through the centre
# of the **left hippocampus** (outlined) show the structures the diagnosis depends on; compare the
# hippocampus and the ventricles across groups. Left: the same coronal slice the blog's way, ids as grey.


# %% tags=["hippocampus-slices"]
def centroid(vol, ids):
    where = np.argwhere(np.isin(vol, ids))
    return where.mean(axis=0).round().astype(int).tolist() if len(where) else [n // 2 for n in vol.shape]


fig, axes = plt.subplots(2, len(volumes) + 1, figsize=(3 * (len(volumes) + 1), 6), squeeze=False)
vol, zooms = volumes[classes[0]]
grey = planes(vol, centroid(vol, (17,)))["coronal"]
shown = axes[0, 0].imshow(grey, cmap="gray", origin="lower", aspect=aspects(zooms)["coronal"])
fig.colorbar(shown, ax=axes[0, 0], fraction=0.046, label="label id as grey level")
axes[0, 0].set_title(f"{classes[0]}: ids in grey (blog)")
axes[1, 0].set_visible(False)
for c, (label, (vol, zooms)) in enumerate(volumes.items(), start=1):
    centre = centroid(vol, (17,))
    for r, name in enumerate(("coronal", "sagittal")):
        plane = planes(vol, centre)[name]
        ax = axes[r, c]
        ax.imshow(colour(plane), origin="lower", aspect=aspects(zooms)[name], interpolation="nearest")
        ax.contour(np.isin(plane, HIPPOCAMPUS), levels=[0.5], colors="red", linewidths=0.8)
        ax.set_title(f"{label}: {name} through left hippocampus", fontsize=9)
for ax in axes.flat:
    ax.set_xticks([]), ax.set_yticks([])
fig.legend(
    handles[:4],
    [text for _, text in legend[:4]],
    loc="lower left",
    fontsize=8,
    frameon=False,
    bbox_to_anchor=(0.02, 0.1),
)
fig.tight_layout()
show(fig)

# %% [markdown]
# ### Resampling label maps: nearest neighbour only
#
# Resizing a volume computes each new voxel from its neighbours. Trilinear interpolation (the blog's
# `F.interpolate(vol, size=224, mode="trilinear")`) **averages ids**: between left hippocampus (17) and right
# hippocampus (53) it invents 26 (left accumbens), 35 (no aseg/DKT structure) and 44 (right inferior
# lateral ventricle); at every boundary it creates values that are not in the input, and rounding them gives
# valid-looking but wrong structures. Nearest neighbour copies an existing id, so every output value is a
# label of the input. The pipeline resamples label maps only that way (`preprocess.resample_nearest`,
# ids then mapped to a compact index and one-hot encoded as channels).

# %% tags=["resampling"]
import torch
import torch.nn.functional as F

from adni_lightning.data.preprocess import resample_nearest

pair = torch.tensor([17.0, 53.0]).reshape(1, 1, 1, 1, 2)  # left hippocampus next to right hippocampus
for mode in ("trilinear", "nearest"):
    kwargs = {"align_corners": True} if mode == "trilinear" else {}
    values = F.interpolate(pair, size=(1, 1, 5), mode=mode, **kwargs).flatten().tolist()
    names = [FREESURFER_LUT.get(round(v), ("not an aseg/DKT id",))[0] for v in values]
    print(f"{mode:>9}: " + ", ".join(f"{v:g} ({n})" for v, n in zip(values, names)))

# The same on a whole label map: resize it to 3/4 of its side both ways.
vol = volumes[classes[-1]][0]
size = tuple(max(8, 3 * n // 4) for n in vol.shape)
input_ids = set(np.unique(vol).tolist())
tri = F.interpolate(
    torch.from_numpy(vol.astype(np.float32))[None, None], size=size, mode="trilinear", align_corners=True
)[0, 0].numpy()
rounded = np.rint(tri).astype(np.int64)
new = sorted(set(np.unique(rounded).tolist()) - input_ids)
foreign = np.isin(rounded, new)
fractional = int((np.abs(tri - rounded) > 1e-3).sum())
print(
    f"trilinear to {size}: {fractional} voxels hold fractional ids; after rounding, {len(new)} ids that "
    f"are not in the input (e.g. {new[:8]}) on {foreign.sum()} voxels "
    f"({foreign.sum() / max(1, (rounded > 0).sum()):.1%} of the brain)"
)
near = resample_nearest(vol, np.zeros(3), np.asarray(vol.shape, dtype=float), size)
print(f"nearest to {size}: {len(set(np.unique(near).tolist()) - input_ids)} ids that are not in the input")

# %% [markdown]
# ## 5. The signal: hippocampus and ventricle volumes per group
#
# The strongest volumetric markers of AD are hippocampal (and amygdala) atrophy and enlarged lateral
# ventricles. Count their voxels in each subject's first scan (one per subject, so people with more visits do
# not weigh more) and convert to millilitres with the voxel size. The groups overlap: volume also depends on
# age and head size, so no single threshold separates them — the network has to combine evidence.

# %% tags=["volumes"]
baseline = rows.sort_values(["subject", "age", "row"]).drop_duplicates("subject")
if len(baseline) > MAX_VOLUMES:
    baseline = baseline.sample(MAX_VOLUMES, random_state=0)
records = []
for row in baseline.itertuples():
    ids, affine = read_volume(row.path)
    counts = np.bincount(np.clip(ids, 0, None).ravel().astype(np.intp), minlength=3000)
    ml = abs(np.linalg.det(affine[:3, :3])) / 1000
    records.append(
        {
            "subject": row.subject,
            "label": row.label,
            "age": row.age,
            "hippocampus_ml": ml * counts[list(HIPPOCAMPUS)].sum(),
            "lateral_ventricles_ml": ml * counts[list(LATERAL_VENTRICLE)].sum(),
            "brain_ml": ml * counts[1:].sum(),
        }
    )
markers = pd.DataFrame(records)
markers["hippocampus_per_brain_%"] = 100 * markers["hippocampus_ml"] / markers["brain_ml"]
columns = ["hippocampus_ml", "lateral_ventricles_ml", "hippocampus_per_brain_%"]
display(markers.groupby("label")[columns].median().reindex(classes).round(2).rename_axis("median per group"))

fig, axes = plt.subplots(1, len(columns), figsize=(4 * len(columns), 3.5))
rng = np.random.default_rng(0)
for ax, column in zip(axes, columns):
    data = [markers.loc[markers["label"] == label, column] for label in classes]
    ax.boxplot(data, showfliers=False)
    ax.set_xticks(range(1, len(classes) + 1), classes)
    for i, values in enumerate(data, start=1):
        ax.scatter(i + rng.uniform(-0.15, 0.15, len(values)), values, s=8, alpha=0.6)
    ax.set_title(column.replace("_", " "))
fig.suptitle(f"first scan of {len(markers)} subjects")
fig.tight_layout()
show(fig)

# %% [markdown]
# ## 6. Learning curves of a run
#
# A `fit` writes TensorBoard event files to `RUN_DIR/tensorboard` (scalars `train/loss`, `train/acc`,
# `val/loss`, `val/acc`, `val/bacc`, `val/f1`, `val/auroc`); a resumed run appends to the same folder. They are
# read here with TensorBoard's `EventAccumulator`, no TensorBoard server needed. If `RUN_DIR/tensorboard` holds
# no event files yet, a tiny run is trained beside `RUN_DIR` first (2 epochs at 32³ on the CPU: the curves show
# that the plumbing works, not a model). Balanced accuracy (`val/bacc`) is the number to compare: with
# unbalanced classes plain accuracy rewards predicting the majority class.

# %% tags=["curves"]
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def run_events(root):
    """The training events of the run in ``root`` (``root/tensorboard``, where `fit` writes them), or ``None``."""
    log_dir = Path(root) / "tensorboard"
    return log_dir if any(log_dir.glob("events.out.tfevents.*")) else None


if run_events(run_dir) is None:
    # Not into RUN_DIR itself: a later `fit` there would find this run's last.ckpt and refuse to start.
    demo_dir = run_dir.with_name(f"{run_dir.name}-notebook-demo")
    hint = f" ({run_dir} holds cv folds: set RUN_DIR to one of them)" if any(run_dir.glob("fold_*")) else ""
    print(f"no TensorBoard event files in {run_dir / 'tensorboard'}{hint}; using a tiny run in {demo_dir}")
    run_dir = demo_dir
if run_events(run_dir) is None:
    print(f"training the tiny run (2 epochs, 32³, CPU workers 0) in {run_dir}")
    from unittest import mock

    from adni_lightning.main import main

    with mock.patch.object(sys, "argv", sys.argv[:1]):  # hide the kernel's own -f <connection file>
        main(
            [
                "fit",
                "--trainer.default_root_dir",
                str(run_dir),
                "--data.manifest.data_dir",
                str(data_dir),
                "--data.manifest.csv_path",
                str(csv_path),
                "--data.preprocessing.image_size",
                "32",
                "--trainer.max_epochs",
                "2",
                "--data.loader.num_workers",
                "0",
                "--trainer.enable_progress_bar",
                "false",
            ]
        )
log_dir = run_events(run_dir)
events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
events.Reload()
scalars = {
    tag: pd.DataFrame([(e.step, e.value) for e in events.Scalars(tag)], columns=["step", "value"])
    for tag in events.Tags()["scalars"]
}
print(f"read {log_dir}: {', '.join(sorted(scalars))}")

saved_split = run_dir / "split.csv"
if saved_split.is_file():
    theirs = pd.read_csv(saved_split, dtype=str).set_index("image_id")["split"]
    ours = split.set_index("image_id")["split"]
    same = theirs.reindex(ours.index).equals(ours)
    print(f"{saved_split}: {'the same split as section 3' if same else 'a different split from section 3'}")

panels = {"loss": ["train/loss", "val/loss"], "accuracy": ["train/acc", "val/acc", "val/bacc"]}
fig, axes = plt.subplots(1, len(panels), figsize=(11, 3.5))
epoch_ends = scalars["epoch"].groupby("value")["step"].max() if "epoch" in scalars else pd.Series(dtype=float)
for ax, (title, tags) in zip(axes, panels.items()):
    for tag in tags:
        if tag in scalars:
            ax.plot(scalars[tag]["step"], scalars[tag]["value"], marker="o", label=tag)
    for step in epoch_ends.to_numpy():
        ax.axvline(step, color="grey", lw=0.5, ls=":")
    if len(epoch_ends):
        top = ax.secondary_xaxis("top")
        top.set_xticks(epoch_ends.to_numpy(), [f"{int(e)}" for e in epoch_ends.index])
        top.set_xlabel("end of epoch")
    ax.set_xlabel("optimizer step")
    ax.set_title(title)
    ax.legend()
fig.tight_layout()
show(fig)

last = {tag: frame["value"].iloc[-1] for tag, frame in scalars.items() if tag.startswith(("train/", "val/"))}
display(pd.Series(last, name="last value").round(3).to_frame())

# %% [markdown]
# ## What to take away
#
# * Split by **subject** (section 3); an image-level split puts the same brains in training and validation.
# * Label maps are ids: read them as integers, draw them with the colour table, resample them with nearest
#   neighbour, feed them to the network as one-hot channels.
# * Hippocampus and ventricle volumes differ between groups but overlap; report balanced accuracy against a
#   volume-only baseline before believing a 3D CNN learned more.
