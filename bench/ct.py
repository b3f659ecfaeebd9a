"""CT denoising benchmark: engines, batch jobs over DICOM series, and live slices, side by side
in one run on this machine (the parts shared with :mod:`bench.pet` live in :mod:`bench.volumes`).
Prints JSON.

    python -m bench.ct [--model unet] [--slices 300] [--quick] [--json PATH] [--no-ray]

1. **engines**: 512² phantom slices (:func:`devices.ct_phantom.anatomical_slice`) through
   :class:`engines.ct.CtDenoiser` on each backend (eager, onnxruntime; tensorrt where a CUDA
   GPU and torch_tensorrt are present) at batch 1 and batch 8, in alternating blocks so that
   background load hits every backend alike: slices/s, ms per call, CPU ms per slice (this
   process's CPU time over the slices: every thread of the engine counted), build time, the
   largest difference from eager (HU), and each backend's ratios to eager (throughput, CPU).
2. **batch**: a ``--slices`` 512² CT series (int16, slope 1, intercept -1024, 0.98 mm pixels,
   phantom slices cycled from a pool) written once with pydicom, then denoised end to end by
   :func:`stream.batch.run_batch` as ``sigstream denoise ct`` does (DICOM read, denoise, DICOM
   write, statistics): the series whole with 1 worker, then the same slices as two series of
   half each (two items for two workers) with 1 worker (in this process) and with 2 (a local
   pool of processes), then with 1 and 2 Ray actors on a local cluster started once for both
   (its start timed apart). Seconds, slices/s and the 2-vs-1 ratio, of the wall time and of
   the time inside the items: the wall time includes starting the workers and loading their
   engines (each runs the accuracy gate against eager, as ``sigstream denoise ct`` does), shown
   as ``outside_items_s``; CPU ms per slice of this process and its pool processes.
3. **live**: ``sigstream run ct`` as a real :class:`~stream.service.Service` in this process;
   a source process pushes 512² int16 slices of ``--live-series`` series at ``--live-rate``
   slices/s in all for ``--live-seconds``; this process subscribes and measures
   capture-to-result latency per slice (p50/p99/max) and accounts for every slice sent
   (results + errors + dropped == sent, unexplained 0), next to the service's own summary and
   the CPU ms per slice of each stage process.

``--backend`` (default ``auto``: onnxruntime on a CPU) serves parts 2 and 3. Every engine here
runs with ``--threads`` intra-op threads (default 1, as the batch workers and the service's
workers do); one engine cache is shared by all parts, so only part 1 builds. If the shipped
weights are missing (training not done), seeded random weights of the same architecture are
used and the JSON says ``"weights": "random-init"``: timings do not depend on weight values.
``machine`` has the CPU, the load at start and end, the cores other processes kept busy in the
second before the run, and ``loaded_machine`` notes when other work was running. ``--quick``:
24 slices, 2 engine rounds, 5 s of live slices.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

if not __package__:  # run as a file
    import _script

    _script.rerun_as_module()

from bench import volume_run, volumes

__all__ = ["CtBenchConfig", "bench", "ct_path", "main", "phantom_pool"]

SLICE_PX = 512
#: Stored value = HU - INTERCEPT (slope 1), as most CT scanners store int16 slices.
SLOPE, INTERCEPT = 1.0, -1024.0
PIXEL_MM = 500.0 / SLICE_PX  # the phantom's 500 mm field of view
SLICE_STEP_MM = 1.0


@dataclass(frozen=True, kw_only=True)
class CtBenchConfig(volume_run.VolumeBenchConfig):
    """One run (:class:`~bench.volume_run.VolumeBenchConfig`): ``model`` a key of
    :data:`engines.ct.CT_SPECS`, ``slices`` of the batch series, ``phantoms`` drawn for them."""

    model: str = "unet"
    slices: int = 300
    phantoms: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.phantoms < 1:
            raise ValueError(f"phantoms must be at least 1, got {self.phantoms}")
        if self.slices < 2:
            raise ValueError("slices must be at least 2 (the series is also split in two)")


# ---------------------------------------------------------------------------------------------
# Inputs


def ct_path() -> volumes.VolumeBenchPath:
    """The CT path as this bench writes (int16, slope 1, intercept -1024, 0.98 mm pixels, 1 mm
    apart), denoises and serves it."""
    from pydicom.uid import CTImageStorage

    from engines.ct.denoise import CtDenoiser
    from stream.paths.ct.commands import body_mask
    from stream.paths.ct.spec import CT_MAX_BATCH, CT_SLICES

    return volumes.VolumeBenchPath(
        name="ct", modality="CT", sop_class=CTImageStorage, unit="HU", unit_key="hu",
        slice_px=SLICE_PX, pixel_mm=PIXEL_MM, slice_step_mm=SLICE_STEP_MM, slope=SLOPE,
        intercept=INTERCEPT, patient_id="BENCH-CT", series_description="BENCH 1mm",
        denoiser=CtDenoiser, foreground=body_mask, slices=CT_SLICES, max_batch=CT_MAX_BATCH,
    )


def phantom_pool(n: int) -> np.ndarray:
    """``n`` distinct 512² anatomical phantom slices (seeds 0..n-1): float32 HU ``(n, 512,
    512)``, cycled wherever more slices are needed (the time per slice does not depend on
    which anatomy it shows)."""
    from devices.ct_phantom import anatomical_slice

    return np.stack([anatomical_slice(SLICE_PX, seed=seed).hu for seed in range(n)]).astype(
        np.float32)


# ---------------------------------------------------------------------------------------------
# The run


def bench(config: CtBenchConfig) -> dict[str, Any]:
    """All three parts (see the module docstring), as a dict ready for JSON."""
    from engines.ct.specs import CT_SPECS
    from engines.engine import resolve_backend

    if config.model not in CT_SPECS:
        raise ValueError(f"unknown CT model {config.model!r}; choose from {sorted(CT_SPECS)}")
    run = volume_run.BenchRun("ct", {**dataclasses.asdict(config),
                                  "backend_resolved": resolve_backend(config.backend)[0]})
    result = run.result
    path = ct_path()
    with tempfile.TemporaryDirectory(prefix="bench-ct-") as tmp_name:
        tmp = Path(tmp_name)
        spec, result["weights"], live_weights = volumes.weights_spec(CT_SPECS[config.model], tmp)
        t0 = time.perf_counter()
        pool = phantom_pool(min(config.phantoms, config.slices))
        result["config"]["phantom_pool_s"] = round(time.perf_counter() - t0, 2)
        volume_run.serving_parts(run, config, path, spec, engine_values=pool,
                              batch_values=volumes.cycled(pool, config.slices),
                              live_values=pool[:8], live_weights=live_weights, tmp=tmp)
    return run.finish()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ct",
                                     description=__doc__.split("\n\n")[0])
    from engines.ct.specs import CT_SPECS  # no torch

    parser.add_argument("--model", default="unet", choices=sorted(CT_SPECS))
    parser.add_argument("--slices", type=int, default=None,
                        help="slices of the batch series (default 300; --quick 24)")
    parser.add_argument("--quick", action="store_true",
                        help="24 slices, 2 engine rounds, 5 s of live slices")
    volume_run.add_common_arguments(parser)
    return volume_run.bench_main(parser, argv, lambda args: CtBenchConfig(
        model=args.model,
        slices=args.slices if args.slices is not None else (24 if args.quick else 300),
        phantoms=8 if args.quick else 16, **volume_run.common_config(args),
    ), bench)


if __name__ == "__main__":
    sys.exit(main())
