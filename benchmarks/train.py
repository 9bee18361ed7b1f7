"""Training-step benchmark: patches/s of the full ludl step against the bare MONAI DynUNet step, in one run.

The ludl step: `DoseNet` (DynUNet backbone + segmentation, kinetics and residual heads + the physics layer's FFT
dose) → masked Dice + CE, relative voxel dose loss and region-mean dose loss → backward → Adam step.
The bare step: the same DynUNet (same input channels, filters, output features, patch and batch) → MSE to a random
target → backward → Adam step. Both run interleaved in rounds (so load from other processes hits both alike), and
the median step time of each gives patches/s and the ratio ludl / bare.

    python benchmarks/train.py                              # CPU, 64³ patches, batch 2
    python benchmarks/train.py --device cuda --amp bf16 --patch 128 --batch 2

Target (issue: training): ratio ≥ 0.8 on the CPU, and with bf16 autocast on a GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ludl.io.regions import SEGMENTATION_CLASSES, class_index
from ludl.models.backbones import dynunet
from ludl.models.network import DoseNet
from ludl.models.physics_layer import DosePhysicsLayer
from ludl.training.losses import dose_weight_map, masked_dice_ce, region_mean_dose_loss, relative_dose_loss

N_CLASSES = len(SEGMENTATION_CLASSES)


def synthetic_batch(patch: int, batch: int, spacing_mm: float, device: torch.device, seed: int = 0) -> dict[str, Any]:
    """Blobs of activity (an organ and a lesion per patch), labels, and a target dose from a known τ map."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*(np.arange(patch, dtype=np.float32),) * 3, indexing="ij"))
    activity = np.full((batch, 1, patch, patch, patch), 0.01, dtype=np.float32)
    labels = np.zeros((batch, patch, patch, patch), dtype=np.int64)
    tau = np.full_like(activity, 60.0)
    for b in range(batch):
        for cls, level, radius, tau_h in (("kidney_left", 0.3, patch / 6, 90.0), ("lesion", 1.0, patch / 10, 200.0)):
            centre = rng.uniform(patch * 0.3, patch * 0.7, size=3).astype(np.float32)
            r2 = ((grid - centre[:, None, None, None]) ** 2).sum(axis=0)
            blob = np.exp(-r2 / (2 * radius**2))
            activity[b, 0] += level * blob
            tau[b, 0] = np.where(blob > 0.5, tau_h, tau[b, 0])
            labels[b][blob > 0.5] = class_index(cls)
    a = torch.from_numpy(activity).to(device)
    spacing = (spacing_mm,) * 3
    with torch.no_grad():
        target = DosePhysicsLayer()(a, torch.from_numpy(tau).to(device), torch.ones_like(a), spacing).dose_gy
    lab = torch.from_numpy(labels).to(device)
    masks = torch.stack([(lab == c) for c in range(1, N_CLASSES)], dim=1).float()
    region_means = (masks * target).sum(dim=(2, 3, 4)) / masks.sum(dim=(2, 3, 4)).clamp_min(1)
    return {
        "activity_mbq_per_ml": a,
        "suv": 1.0 + 20.0 * a,
        "density_g_per_ml": torch.ones_like(a),
        "time_h": torch.full((batch,), 24.0, device=device),
        "injected_gbq": torch.full((batch,), 7.4, device=device),
        "spacing_zyx_mm": spacing,
        "target_dose_gy": target,
        "labels": lab,
        "region_masks": masks,
        "region_means_gy": region_means,
        "dose_weights": dose_weight_map(lab),
    }


def _autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager[Any]:
    if amp == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def ludl_step(net: DoseNet, opt: torch.optim.Optimizer, batch: dict[str, Any], amp: str) -> None:
    """One full ludl training step."""
    device = batch["activity_mbq_per_ml"].device
    opt.zero_grad(set_to_none=True)
    with _autocast(device, amp):
        out = net(batch)
        loss = (
            masked_dice_ce(out.seg_logits, batch["labels"])
            + relative_dose_loss(out.dose_gy, batch["target_dose_gy"], batch["dose_weights"])
            + region_mean_dose_loss(out.dose_gy, batch["region_means_gy"], batch["region_masks"])
        )
    loss.backward()
    opt.step()


def bare_step(
    net: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, target: torch.Tensor, amp: str
) -> None:
    """One bare MONAI step: DynUNet → MSE → backward → Adam."""
    opt.zero_grad(set_to_none=True)
    with _autocast(x.device, amp):
        loss = torch.nn.functional.mse_loss(net(x).float(), target)
    loss.backward()
    opt.step()


def _timed(step: Callable[[], None], n: int, device: torch.device) -> list[float]:
    times = []
    for _ in range(n):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    """Parse arguments, run both steps interleaved, print patches/s and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--filters", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--spacing", type=float, default=4.8, help="isotropic voxel size in mm")
    parser.add_argument("--mode", default="tau", choices=("tau", "direct"))
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each, first")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="timed steps of each per round")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", default="none", choices=("none", "bf16"))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    features = args.filters[0]
    in_channels = DoseNet.in_channels_for("channel")
    net = DoseNet(dynunet(in_channels, features, filters=args.filters), features, N_CLASSES, dose_mode=args.mode)
    net = net.to(device)
    bare = dynunet(in_channels, features, filters=args.filters).to(device)
    opt_net = torch.optim.Adam(net.parameters(), lr=1e-4)
    opt_bare = torch.optim.Adam(bare.parameters(), lr=1e-4)
    batch = synthetic_batch(args.patch, args.batch, args.spacing, device)
    shape = (args.batch, in_channels, *(args.patch,) * 3)
    x = torch.randn(shape, device=device)
    target = torch.randn((args.batch, features, *(args.patch,) * 3), device=device)

    def run_ludl() -> None:
        ludl_step(net, opt_net, batch, args.amp)

    def run_bare() -> None:
        bare_step(bare, opt_bare, x, target, args.amp)

    _timed(run_bare, args.warmup, device)
    _timed(run_ludl, args.warmup, device)
    t_bare: list[float] = []
    t_ludl: list[float] = []
    for _ in range(args.rounds):
        t_bare += _timed(run_bare, args.steps, device)
        t_ludl += _timed(run_ludl, args.steps, device)
    bare_ps = args.batch / statistics.median(t_bare)
    ludl_ps = args.batch / statistics.median(t_ludl)
    print(
        f"device {device} amp {args.amp} threads {torch.get_num_threads()} patch {args.patch}³ batch {args.batch} "
        f"filters {args.filters} mode {args.mode}, {len(t_bare)} timed steps each"
    )
    print(f"bare MONAI DynUNet step : {bare_ps:8.3f} patches/s  (median {statistics.median(t_bare):.3f} s/step)")
    print(f"full ludl step          : {ludl_ps:8.3f} patches/s  (median {statistics.median(t_ludl):.3f} s/step)")
    print(f"ratio ludl / bare       : {ludl_ps / bare_ps:8.3f}  (target ≥ 0.8)")


if __name__ == "__main__":
    main()
