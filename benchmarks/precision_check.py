"""Compare bf16-mixed against fp32 logits of the same model on the same batch.

cuDNN 9.8–9.10 gave silently wrong Conv3d results in bf16 on large inputs (pytorch#163539): run this once on
the GPU you train on. It prints the largest absolute logit difference, the agreement of the predicted class
and the speed of both forward passes. Usage::

    python benchmarks/precision_check.py [--device cuda] [--size 128] [--batch 4] [--widths 32 64 128 256]
"""

from __future__ import annotations

import argparse
import time

import torch

from adni_lightning.models import FusionNet, ResNet3d


def timed_logits(
    model: torch.nn.Module, image: torch.Tensor, tabular: torch.Tensor, dtype: torch.dtype | None, repeats: int
) -> tuple[torch.Tensor, float]:
    """Logits (fp32) and mean seconds per forward, under autocast to ``dtype`` (None: plain fp32)."""
    device_type = image.device.type
    if device_type == "cuda":
        torch.cuda.reset_peak_memory_stats(image.device)
    with torch.inference_mode(), torch.autocast(device_type, dtype=dtype or torch.float32, enabled=dtype is not None):
        logits = model(image, tabular).float()
        if device_type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            model(image, tabular)
        if device_type == "cuda":
            torch.cuda.synchronize()
    return logits, (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--channels", type=int, default=9)
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    torch.manual_seed(0)
    device = torch.device(args.device)
    encoder = ResNet3d(args.channels, widths=args.widths, blocks=[1] * len(args.widths))
    model = FusionNet(encoder, num_tabular_features=3, num_classes=3).to(device).eval()
    # A label-map-like input: one-hot structures, so the test exercises realistic sparsity.
    index = torch.randint(0, args.channels + 1, (args.batch, args.size, args.size, args.size), device=device)
    image = torch.nn.functional.one_hot(index, args.channels + 1)[..., 1:].permute(0, 4, 1, 2, 3).float()
    tabular = torch.randn(args.batch, 3, device=device)

    fp32, t32 = timed_logits(model, image, tabular, None, args.repeats)
    peak32 = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    bf16, t16 = timed_logits(model, image, tabular, torch.bfloat16, args.repeats)
    peak16 = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    diff = (bf16 - fp32).abs()
    agree = (bf16.argmax(1) == fp32.argmax(1)).float().mean().item()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    cudnn = torch.backends.cudnn.version() if device.type == "cuda" else "-"
    print(f"device {name}, torch {torch.__version__}, cuDNN {cudnn}, input {tuple(image.shape)}")
    print(f"max |logit bf16 - fp32| = {diff.max().item():.4f} (fp32 logits span {fp32.abs().max().item():.3f})")
    print(f"predicted class agreement: {agree:.0%}")
    print(f"forward: fp32 {t32 * 1000:.1f} ms, bf16-mixed {t16 * 1000:.1f} ms, speed-up {t32 / t16:.2f}x")
    if peak32 is not None:
        print(f"peak device memory (inference): fp32 {peak32:.2f} GiB, bf16-mixed {peak16:.2f} GiB")


if __name__ == "__main__":
    main()
