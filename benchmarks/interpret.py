"""Seconds per image of structure occlusion (direct and Captum ``FeatureAblation``) and Integrated Gradients.

``python benchmarks/interpret.py [--size 48] [--images 4] [--ig_steps 32] [--chunk 16]`` times the
default synthetic config's network (ResNet3d [16, 32, 64], 9 channels) at ``--size``³ on a few images of a
small synthetic cohort, with untrained weights (the cost does not depend on them). Both occlusion versions
run on the same inputs and must agree; the faster is the one :mod:`adni_lightning.interpret.occlusion` keeps.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from adni_lightning.data.labels import channel_lookup
from adni_lightning.interpret.attribution import ProbabilityModel, captum_attr, integrated_gradients
from adni_lightning.interpret.occlusion import present_structures, structure_occlusion, visible_labels
from adni_lightning.run import Run


def captum_occlusion(
    model: torch.nn.Module,
    image: torch.Tensor,
    tabular: torch.Tensor,
    volume: torch.Tensor,
    table: torch.Tensor,
    chunk: int,
) -> dict[int, torch.Tensor]:
    """Captum's FeatureAblation with a structure mask: compact label → ``(K,)`` delta_p (our sign)."""
    mask = volume.long()[None]  # (1, 1, D, H, W), broadcast over the channels
    mask = torch.where(torch.isin(mask, visible_labels(table)), mask, torch.zeros_like(mask))
    attributions = (
        captum_attr()
        .FeatureAblation(ProbabilityModel(model))
        .attribute(
            image,
            baselines=0.0,
            additional_forward_args=(tabular,),
            feature_mask=mask,
            perturbations_per_eval=chunk - 1,
        )
    )  # (K, C, D, H, W): original − ablated, the same value on every voxel of a structure
    first = {int(label): int(torch.nonzero(mask.flatten() == label)[0]) for label in present_structures(volume, table)}
    flat = attributions.flatten(2)[:, 0]
    return {label: -flat[:, index] for label, index in first.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=48, help="network input side (image_size)")
    p.add_argument("--images", type=int, default=4, help="images timed")
    p.add_argument("--ig_steps", type=int, default=32, help="Integrated Gradients steps")
    p.add_argument("--chunk", type=int, default=16, help="volumes per forward pass")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = Run(
            options={
                "trainer.default_root_dir": tmp,
                "data.manifest.data_dir": Path(tmp) / "data",
                "data.cohort.subjects": 8,
                "data.cohort.size": 64,
                "data.loader.num_workers": 0,
                "data.preprocessing.image_size": args.size,
            }
        )
        dm, model = run.datamodule, run.model.eval()
        dm.prepare_cohort()
        manifest = dm.manifest()
        entries = dm.cache.build(zip(manifest["image_id"], manifest["path"]))
        table = torch.from_numpy(channel_lookup(dm.preprocessing.channel_map))
        tabular = torch.tensor([[0.0, 1.0, 0.0]])
        times: dict[str, list[float]] = {"direct": [], "captum": [], "ig": []}
        worst = 0.0
        for image_id in manifest["image_id"][: args.images]:
            volume = torch.from_numpy(__import__("numpy").load(entries[image_id]))[None]
            image = dm.network_input(volume[None])
            labels = present_structures(volume, table)

            def predict(volumes: torch.Tensor) -> torch.Tensor:
                return model(dm.network_input(volumes), tabular.expand(len(volumes), -1)).softmax(dim=1)

            start = time.perf_counter()
            direct = structure_occlusion(predict, volume, labels, args.chunk)
            times["direct"].append(time.perf_counter() - start)
            start = time.perf_counter()
            with torch.no_grad():
                captum = captum_occlusion(model, image, tabular, volume, table, args.chunk)
            times["captum"].append(time.perf_counter() - start)
            gaps = [float((direct[i] - captum[int(label)]).abs().max()) for i, label in enumerate(labels)]
            worst = max(worst, *gaps)
            start = time.perf_counter()
            integrated_gradients(model, image, tabular, 0, args.ig_steps, args.chunk)
            times["ig"].append(time.perf_counter() - start)
        print(
            f"{args.size}³, {len(labels)} structures in the last image, chunk {args.chunk}, "
            f"{torch.get_num_threads()} torch thread(s); seconds per image (each image: {args.images}):"
        )
        for name, values in times.items():
            print(f"  {name:<7} mean {sum(values) / len(values):.2f}  [{', '.join(f'{v:.2f}' for v in values)}]")
        print(f"  largest |direct - captum| delta_p: {worst:.2e}")


if __name__ == "__main__":
    main()
