"""Where a training epoch goes: the same batches in a bare PyTorch loop beside Lightning's fit loop.

    python scripts/bench_step.py model=bpr data=ml100k                  # any `recsys train` overrides
    python scripts/bench_step.py model=sasrec data=ml100k --epochs 3 --output step.json

Builds the data, model and optimiser exactly as ``recsys train`` does, then times ``--epochs`` epochs
of each, after one warm-up epoch, on one torch thread unless ``--threads`` says otherwise:

- ``bare``: for every training batch, ``model.loss`` (under bf16 autocast when the config's precision
  is bf16), ``zero_grad``, ``backward`` and the optimiser step; batches are loaded beforehand, so this is
  the model's own compute, the floor any training loop can reach with these batches and updates;
- ``forward``: ``model.loss`` alone, without gradients;
- ``lightning``: ``Trainer.fit`` over the same data with validation, checkpointing, logging and the
  progress bar off, timed from each training epoch's start to its end (the loader included).

The difference between ``lightning`` and ``bare`` is what the loop and the loader cost per epoch;
``recsys train`` adds validation and checkpoints on top (its ``s/epoch``). Prints JSON (median seconds
per epoch, steps, milliseconds per step, peak memory).

The FLOP limit: the script also measures this machine's attainable matmul throughput with the same threads
(square float32 products, and bfloat16 where the CPU computes it natively), counts the FLOPs of one training
epoch from the shapes (``torch.utils.flop_counter`` over every batch's forward and backward: matrix products
and attention, the padded positions included since they are computed), and reports each loop's achieved
throughput as a fraction of the attainable one at the run's precision.

    python scripts/bench_step.py model=sasrec data=ml100k data.max_len=200 --threads 2
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def bare_epochs(model, optimizer, batches, epochs: int, autocast: bool, train: bool = True) -> list[float]:
    import torch

    times = []
    for _ in range(epochs + 1):  # the first epoch warms up allocator and kernels
        start = time.perf_counter()
        for batch in batches:
            context = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else nullcontext()
            if train:
                with context:
                    loss = model.loss(batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            else:
                with torch.no_grad(), context:
                    model.loss(batch)
        times.append(time.perf_counter() - start)
    return times[1:]


def matmul_peak(dtype, seconds: float = 2.0) -> float:
    """Attainable FLOP/s of large square matrix products at ``dtype`` with torch's current threads."""
    import torch

    best = 0.0
    for size in (1024, 2048):
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        for _ in range(3):
            a @ b  # warm-up
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 2:
            a @ b
            count += 1
        best = max(best, 2 * size**3 * count / (time.perf_counter() - start))
    return best


def epoch_flops(model, batches, autocast: bool) -> int:
    """FLOPs of one training epoch: forward and backward of every batch, counted from the shapes."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    total = 0
    for batch in batches:
        context = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else nullcontext()
        with FlopCounterMode(display=False) as counter:
            with context:
                loss = model.loss(batch)
            loss.backward()
        total += counter.get_total_flops()
        model.zero_grad(set_to_none=True)
    return total


def real_position_share(batches) -> float | None:
    """Of the history positions an epoch computes (each batch cut to its longest history), the share that
    hold an item rather than padding."""
    from recsys_cli.data import batch as keys

    real = computed = 0
    for batch in batches:
        history = batch.get(keys.HISTORY) if isinstance(batch, dict) else None
        if history is None or history.dim() != 2:
            return None
        filled = history > 0
        width = int(filled.any(0).sum())
        real, computed = real + int(filled.sum()), computed + history.shape[0] * width
    return round(real / computed, 3) if computed else None


def lightning_epochs(cfg, model, datamodule, epochs: int) -> list[float]:
    import pytorch_lightning as pl

    from recsys_cli.core.run import build_trainer

    class EpochTimer(pl.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            self.times.append(time.perf_counter() - self.start)

    timer = EpochTimer()
    trainer = build_trainer(
        cfg,
        [timer],
        logger=False,
        run_dir=None,
        max_epochs=epochs + 1,
        limit_val_batches=0,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=datamodule)
    return timer.times[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="recsys train overrides, e.g. model=bpr data=ml100k")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs of each loop (after one warm-up)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--output", type=Path, help="also write the JSON here")
    args = parser.parse_args()

    import pytorch_lightning as pl
    import torch

    from recsys_cli.config import compose_config
    from recsys_cli.core.family import family_for
    from recsys_cli.core.run import build_model
    from recsys_cli.io import atomic_write_json
    from recsys_cli.runtime import keep_freed_memory, quiet_libraries, resolve_precision

    torch.set_num_threads(args.threads)
    quiet_libraries()
    keep_freed_memory()
    cfg = compose_config(args.overrides)
    family = family_for(cfg)
    data = family.prepare(cfg)
    precision = resolve_precision(cfg.trainer.get("precision", "32-true"), cfg.trainer.get("accelerator"))
    autocast = str(precision).startswith("bf16")

    def fresh():
        pl.seed_everything(int(cfg.seed), verbose=False)
        model = build_model(cfg, data.spec)
        return family.datamodule(cfg, data, model), model

    datamodule, model = fresh()
    datamodule.setup("fit")
    batches = list(datamodule.train_dataloader())
    optimizer = model.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    model.train()
    forward = bare_epochs(model, optimizer, batches, args.epochs, autocast, train=False)
    bare = bare_epochs(model, optimizer, batches, args.epochs, autocast)
    datamodule, model = fresh()
    lightning = lightning_epochs(cfg, model, datamodule, args.epochs)
    flops = epoch_flops(model.train(), batches, autocast)
    from recsys_cli.runtime import native_bf16

    peaks = {"float32": matmul_peak(torch.float32)}
    if native_bf16():
        peaks["bfloat16"] = matmul_peak(torch.bfloat16)
    peak = peaks["bfloat16" if autocast else "float32"]

    steps = len(batches)
    result = {
        "model": str(cfg.model.name),
        "data": str(cfg.data.name),
        "precision": str(precision),
        "threads": args.threads,
        "steps_per_epoch": steps,
        "epoch_seconds": {
            name: round(statistics.median(times), 4)
            for name, times in (("forward", forward), ("bare", bare), ("lightning", lightning))
        },
        "ms_per_step": {
            name: round(statistics.median(times) / steps * 1000, 3)
            for name, times in (("forward", forward), ("bare", bare), ("lightning", lightning))
        },
        "flops_per_epoch": flops,
        "real_position_share": real_position_share(batches),
        "attainable_gflops": {name: round(value / 1e9, 1) for name, value in peaks.items()},
        "achieved_gflops": {
            name: round(flops / statistics.median(times) / 1e9, 1)
            for name, times in (("bare", bare), ("lightning", lightning))
        },
        "fraction_of_attainable": {
            name: round(flops / statistics.median(times) / peak, 3)
            for name, times in (("bare", bare), ("lightning", lightning))
        },
        "peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "overrides": args.overrides,
    }
    print(json.dumps(result, indent=2))
    if args.output:
        atomic_write_json(args.output, result)


if __name__ == "__main__":
    main()
