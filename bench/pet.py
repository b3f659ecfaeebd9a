"""PET denoising benchmark: engines, batch jobs over an 89 x 192 x 192 PET DICOM series, live
slices and training, side by side in one run on this machine. Prints JSON.

    python -m bench.pet [--model n2n] [--slices 89] [--quick] [--json PATH] [--no-ray]

The series (``data``): by default a synthetic scan of the NEMA IEC body phantom
(:func:`synthetic_volume`: :func:`devices.pet_phantom.nema_slice` at each slice's height, through
the scanner's resolution, Poisson counts, noise correlated as OSEM's is), ``--slices`` slices
centred on the sphere plane, 192² pixels of 2.08 mm, 2.78 mm apart, as the real NEMA scan of
DATA.md; ``--scan FOLDER`` takes the values (and spacing) of a real PET series instead, e.g.
``/work/shared/data/pet-nema-iq``. Written as int16 with one RescaleSlope per slice (its
largest value over 32767) and Units BQML, as PET scanners store them.

1. **engines**: the slices through :class:`engines.pet.PetDenoiser` (192² slices padded to the
   models' 200² tile) on each backend (eager, onnxruntime; tensorrt where a CUDA GPU and
   torch_tensorrt are present) at batch 1 and batch 8, in alternating rounds: slices/s,
   volumes per minute (of an 89-slice volume), ms per call, CPU ms per slice (this process's
   CPU time: every engine thread counted), build time, the largest difference from eager
   (Bq/ml) and each backend's ratios to eager.
2. **batch**: the series denoised end to end by :func:`stream.batch.run_batch` as ``sigstream
   denoise pet`` does (DICOM read, denoise with the accuracy gate at load, DICOM write,
   statistics inside the activity): first the whole series on 1 worker with each backend
   (``per_backend``, ratios in ``per_backend_vs_eager``); then with ``--backend``: the whole
   series on 1 worker, the same slices as two series of half each on 1 worker and on a local
   pool of 2, then on 1 and 2 Ray actors of one local cluster. Slices/s and volumes per minute
   of the wall time and of the time inside the items, seconds outside the items (workers
   starting, engines loading and gated), CPU ms per slice, and the 2-vs-1 ratios.
3. **live**: ``sigstream run pet`` as a real :class:`~stream.service.Service` in this process; a
   source process pushes int16 slices (each with its slope) of ``--live-series`` series at
   ``--live-rate`` slices/s in all for ``--live-seconds``; capture-to-result latency per slice
   (p50/p99/max), every slice accounted for (results + errors + dropped == sent, unexplained
   0), the service's own summary and the CPU ms per slice of each stage process.
4. **training**: :func:`engines.pet.train.train_pet` for ``--train-steps`` steps of the default
   batch (16) and patch (64²) on a few simulated 2-minute slices (no validation), for each
   model kind (a blind-spot model, ``--model`` or the served one, and Noise2Noise, ``n2n``),
   taking turns for ``--train-rounds`` rounds: steps/s and ms per step over all steps and
   after the first fifth of each run (warm-up excluded), CPU ms per step, and n2n's ratios to
   the blind-spot model.

``--backend`` (default ``auto``: onnxruntime on a CPU) serves parts 2 and 3; every engine runs
with ``--threads`` intra-op threads (default 1, as the batch workers and the service's workers
do), training with ``--train-threads`` (default 2, as ``sigstream train pet``). One engine
cache is shared by parts 1-3. If the served model's weights are absent (not trained yet),
seeded random weights of the same model are used and the JSON says ``"weights": "random-init
(shipped weights absent)"``: timings do not depend on weight values. ``machine`` has the CPU,
the load at start and after each part, the cores other processes kept busy in the second
before the run, and ``loaded_machine`` notes when other work was running. ``--quick``: 24
slices, 2 engine rounds, 5 s of live slices, 1 round of 10 training steps (2.6 minutes on 2
cores that another job kept busy); the full run (89 slices, 6 rounds, 15 s, 2 rounds of 20
steps) is estimated from it at 7-10 minutes on such a machine.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import math
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

__all__ = ["PetBenchConfig", "bench", "main", "pet_path", "scan_volume", "synthetic_volume"]

#: The volume the figures are for: the real NEMA scan's 89 slices of 192² (DATA.md).
VOLUME_SLICES = 89
SLICE_PX = 192
PIXEL_MM = 400.0 / SLICE_PX  # 2.08 mm: a 400 mm field of view
SLICE_STEP_MM = 2.78
#: The scanner's resolution (FWHM, mm), along the axis and in the plane (devices.pet_sim).
FWHM_MM = 6.5
#: Mean counts per voxel at the phantom's 2 kBq/ml background: a short acquisition.
BACKGROUND_COUNTS = 5.0
#: OSEM's noise is correlated over about a pixel; a Gaussian of this SD (pixels) makes it so.
NOISE_CORRELATION_PX = 0.8
TRAIN_IMAGES = 4
_RANDOM_NOTE = "random-init (shipped weights absent)"


@dataclass(frozen=True, kw_only=True)
class PetBenchConfig(volume_run.VolumeBenchConfig):
    """One run (:class:`~bench.volume_run.VolumeBenchConfig`): ``model`` a key of
    :data:`engines.pet.PET_SPECS`, served in parts 1-3; ``slices`` of the series; ``scan`` a
    real PET series to take the values from (``None``: :func:`synthetic_volume`);
    ``train_models`` the models timed in part 4, ``train_steps`` steps each per round for
    ``train_rounds`` rounds, on ``train_threads`` torch threads; ``seed`` of the synthetic
    counts."""

    model: str = "n2n"
    slices: int = VOLUME_SLICES
    scan: Path | None = None
    train_models: tuple[str, ...] = ("n2v2_struct", "n2n")  # a blind-spot model and N2N
    train_steps: int = 20
    train_rounds: int = 2
    train_threads: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("train_rounds", "train_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.slices < 8:
            raise ValueError(f"slices must be at least 8 (a batch of 8), got {self.slices}")
        if self.train_steps < 5:
            raise ValueError(f"train_steps must be at least 5 (the first fifth is warm-up), "
                             f"got {self.train_steps}")


# ---------------------------------------------------------------------------------------------
# Inputs


def pet_path(*, pixel_mm: float = PIXEL_MM, slice_step_mm: float = SLICE_STEP_MM,
             slice_px: int = SLICE_PX) -> volumes.VolumeBenchPath:
    """The PET path as this bench writes (int16, a slope per slice, Units BQML), denoises and
    serves it."""
    from pydicom.uid import PositronEmissionTomographyImageStorage

    from engines.pet.denoise import PetDenoiser
    from stream.paths.pet.commands import activity_mask
    from stream.paths.pet.spec import PET_MAX_BATCH, PET_SLICES

    return volumes.VolumeBenchPath(
        name="pet", modality="PT", sop_class=PositronEmissionTomographyImageStorage,
        unit="Bq/ml", unit_key="bq_ml", slice_px=slice_px, pixel_mm=pixel_mm,
        slice_step_mm=slice_step_mm, slope=None, intercept=0.0, patient_id="BENCH-PET",
        series_description="BENCH PET 2 min", tags=(("Units", "BQML"),), denoiser=PetDenoiser,
        foreground=activity_mask, slices=PET_SLICES, max_batch=PET_MAX_BATCH,
        volume_slices=VOLUME_SLICES,
    )


def synthetic_volume(slices: int = VOLUME_SLICES, *, seed: int = 0) -> np.ndarray:
    """``slices`` transaxial slices of the NEMA IEC body phantom (2 kBq/ml background, spheres
    10:1), centred on the sphere plane and :data:`SLICE_STEP_MM` apart, as a short PET scan
    shows them: float32 Bq/ml ``(slices, 192, 192)`` on :data:`PIXEL_MM` pixels. Each slice is
    the phantom seen through the scanner's axial and in-plane resolution (:data:`FWHM_MM`),
    as Poisson counts (:data:`BACKGROUND_COUNTS` per voxel at the background) smoothed by
    :data:`NOISE_CORRELATION_PX` as OSEM correlates its noise. Not a reconstruction
    (:mod:`devices.pet_sim` takes 0.3 s a slice): the engines' time does not depend on the
    noise's texture."""
    from scipy.ndimage import gaussian_filter

    from devices.pet_phantom import nema_slice

    rng = np.random.default_rng(seed)
    sigma_px = FWHM_MM / (2.0 * math.sqrt(2.0 * math.log(2.0))) / PIXEL_MM
    per_bq_ml = BACKGROUND_COUNTS / 2000.0
    out = np.empty((slices, SLICE_PX, SLICE_PX), np.float32)
    for k in range(slices):
        phantom = nema_slice(size_px=SLICE_PX, pixel_mm=PIXEL_MM, supersample=2,
                             z_mm=(k - (slices - 1) / 2) * SLICE_STEP_MM,
                             axial_fwhm_mm=FWHM_MM)
        expected = gaussian_filter(phantom.activity_bq_ml.astype(np.float64), sigma_px)
        counts = rng.poisson(np.maximum(expected, 0.0) * per_bq_ml)
        out[k] = gaussian_filter(counts / per_bq_ml, NOISE_CORRELATION_PX)
    return out


def scan_volume(folder: Path, slices: int) -> tuple[np.ndarray, tuple[float, float, float], str]:
    """The values of the PET series in ``folder``: float32 ``(slices, n, n)`` (its middle
    ``slices``, or all of them cycled if it has fewer), its spacing ``(z, y, x)`` mm and its
    label. Raises :class:`~devices.errors.ConfigError` (one line) if none is readable or its
    slices are not square."""
    from devices.errors import ConfigError
    from devices.volumes import VolumeFailure, read_volumes

    for item in read_volumes([folder], modality="PT"):
        if isinstance(item, VolumeFailure):
            raise ConfigError(f"--scan {folder}: {item.message}")
        values = item.values
        if values.shape[1] != values.shape[2] or item.spacing_mm[1] != item.spacing_mm[2]:
            raise ConfigError(f"--scan {folder}: slices must be square with square pixels, got "
                              f"{values.shape[1:]} of {item.spacing_mm[1:]} mm")
        first = max(0, (len(values) - slices) // 2)
        picked = values[(first + np.arange(slices)) % len(values)]
        return picked.astype(np.float32), item.spacing_mm, item.source.label
    raise ConfigError(f"--scan {folder}: no PET series there")


# ---------------------------------------------------------------------------------------------
# 4. Training


def training_throughput(models: tuple[str, ...], *, steps: int, rounds: int, threads: int,
                        tmp: Path) -> dict[str, Any]:
    """Part 4: each of ``models`` trained from scratch for ``steps`` steps of the default batch
    and patch on :data:`TRAIN_IMAGES` simulated 2-minute slices (and their half-count images),
    validation off, the models taking turns for ``rounds`` rounds so that background load hits
    each alike; the weights go to ``tmp``. Per model, over all rounds: steps/s and ms per step,
    the same after the first fifth of each run (warm-up), CPU ms per step (this process, every
    torch thread counted), and each round's steps/s."""
    from engines.pet.data import training_images
    from engines.pet.specs import PET_METHODS
    from engines.pet.train import DEFAULTS, train_pet

    t0 = time.perf_counter()
    images = training_images(TRAIN_IMAGES, seed=0, halves=True, n_val=0, cache_dir=None)
    data_s = time.perf_counter() - t0
    every = max(1, steps // 5)
    # model -> [wall s, steady steps, steady s, CPU s, runs' steps/s...]
    tally: dict[str, dict[str, Any]] = {
        m: {"wall": 0.0, "steady_steps": 0, "steady_s": 0.0, "cpu": 0.0, "by_round": [],
            "params": 0} for m in models}
    for _ in range(rounds):
        for model in models:
            c0 = time.process_time()
            # train_pet logs a JSON line per record to stderr: not this bench's output
            with contextlib.redirect_stderr(io.StringIO()):
                card = train_pet(model, 0, tmp / f"train_{model}", images=images, steps=steps,
                                 threads=threads, val_every=every, progress=False,
                                 command="python -m bench.pet")
            row = tally[model]
            row["cpu"] += time.process_time() - c0  # includes building the net and saving it
            row["wall"] += card["wall_s"]
            # steady: from the first record (after `every` steps) to the last
            first, last = card["history"][0], card["history"][-1]
            row["steady_steps"] += last["step"] - first["step"]
            row["steady_s"] += last["elapsed_s"] - first["elapsed_s"]
            row["by_round"].append(round(steps / card["wall_s"], 3))
            row["params"] = card["params"]
    out: dict[str, Any] = {
        "images": {"slices": TRAIN_IMAGES, "shape": list(images.short.shape[1:]),
                   "source": "engines.pet.data.training_images (devices.pet_sim)",
                   "make_s": round(data_s, 2)},
        "steps": steps, "rounds": rounds, "warmup_steps": every,
        "batch_size": DEFAULTS.batch_size, "patch_px": DEFAULTS.patch_px, "threads": threads,
        "models": {},
    }
    total = steps * rounds
    for model, row in tally.items():
        steady = row["steady_steps"] / row["steady_s"] if row["steady_s"] > 0 else None
        out["models"][model] = {
            "target": PET_METHODS[model].target,
            "params": row["params"],
            "steps_per_s": round(total / row["wall"], 3),
            "ms_per_step": round(1e3 * row["wall"] / total, 1),
            "steps_per_s_after_warmup": round(steady, 3) if steady else None,
            "ms_per_step_after_warmup": round(1e3 / steady, 1) if steady else None,
            "cpu_ms_per_step": round(1e3 * row["cpu"] / total, 1),
            "steps_per_s_by_round": row["by_round"],
        }
    blind = next((m for m in models if PET_METHODS[m].target == "blind_spot"), None)
    if blind is not None and "n2n" in out["models"]:
        a, b = out["models"]["n2n"], out["models"][blind]
        out["n2n_over_blind_spot"] = {
            "blind_spot_model": blind,
            "steps_per_s": volumes.ratio(a["steps_per_s"], b["steps_per_s"]),
            "cpu_per_step": volumes.ratio(a["cpu_ms_per_step"], b["cpu_ms_per_step"]),
        }
    return out


# ---------------------------------------------------------------------------------------------
# The run


def bench(config: PetBenchConfig) -> dict[str, Any]:
    """All four parts (see the module docstring), as a dict ready for JSON. Raises
    :class:`~devices.errors.ConfigError` for an unreadable ``scan``."""
    from engines.engine import resolve_backend
    from engines.pet.specs import PET_SPECS

    for model in (config.model, *config.train_models):
        if model not in PET_SPECS:
            raise ValueError(f"unknown PET model {model!r}; choose from {sorted(PET_SPECS)}")
    run = volume_run.BenchRun("pet", {**dataclasses.asdict(config),
                                   "scan": None if config.scan is None else str(config.scan),
                                   "backend_resolved": resolve_backend(config.backend)[0]})
    result = run.result
    t0 = time.perf_counter()
    if config.scan is None:
        values = synthetic_volume(config.slices, seed=config.seed)
        path = pet_path()
        source = ("synthetic: NEMA IEC body phantom (devices.pet_phantom.nema_slice), "
                  f"{FWHM_MM} mm FWHM, Poisson counts, centred on the sphere plane")
    else:
        values, spacing, label = scan_volume(config.scan, config.slices)
        path = pet_path(pixel_mm=spacing[1], slice_step_mm=spacing[0], slice_px=values.shape[1])
        source = f"real scan: {label}"
    result["data"] = {"source": source, "shape": list(values.shape),
                      "spacing_mm": [round(path.slice_step_mm, 4), round(path.pixel_mm, 4),
                                     round(path.pixel_mm, 4)],
                      "unit": path.unit, "make_s": round(time.perf_counter() - t0, 2),
                      "figures_for_volume_of": [VOLUME_SLICES, SLICE_PX, SLICE_PX]}
    with tempfile.TemporaryDirectory(prefix="bench-pet-") as tmp_name:
        tmp = Path(tmp_name)
        spec, result["weights"], live_weights = volumes.weights_spec(
            PET_SPECS[config.model], tmp, random_note=_RANDOM_NOTE)
        middle = len(values) // 2
        volume_run.serving_parts(run, config, path, spec, engine_values=values,
                              batch_values=values,
                              live_values=values[max(0, middle - 4):middle + 4],
                              live_weights=live_weights, tmp=tmp,
                              per_backend=volumes.backends())
        with run.phase("training"):
            result["training"] = training_throughput(
                config.train_models, steps=config.train_steps, rounds=config.train_rounds,
                threads=config.train_threads, tmp=tmp)
    return run.finish()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pet",
                                     description=__doc__.split("\n\n")[0])
    from engines.pet.specs import IMAGES_ONLY_MODEL, PET_METHODS, PET_SPECS, SERVED_MODEL

    parser.add_argument("--model", default=SERVED_MODEL, choices=sorted(PET_SPECS))
    parser.add_argument("--slices", type=int, default=None,
                        help=f"slices of the series (default {VOLUME_SLICES}; --quick 24)")
    parser.add_argument("--scan", type=Path, default=None, metavar="FOLDER",
                        help="take the values of this PET DICOM series (e.g. "
                             "/work/shared/data/pet-nema-iq) instead of the synthetic phantom")
    parser.add_argument("--quick", action="store_true",
                        help="24 slices, 2 engine rounds, 5 s of live slices, 1 round of 10 "
                             "training steps")
    volume_run.add_common_arguments(parser)
    parser.add_argument("--train-steps", type=int, default=None,
                        help="training steps per model (default 20; --quick 10)")
    parser.add_argument("--train-rounds", type=int, default=None,
                        help="rounds of part 4, the models taking turns (default 2; --quick 1)")
    parser.add_argument("--train-threads", type=int, default=2,
                        help="torch threads while training")
    return volume_run.bench_main(parser, argv, lambda args: PetBenchConfig(
        model=args.model,
        slices=args.slices if args.slices is not None else (24 if args.quick else
                                                            VOLUME_SLICES),
        scan=args.scan,
        # a blind-spot model (--model's, or the best one) and Noise2Noise
        train_models=(args.model if PET_METHODS[args.model].target == "blind_spot"
                      else IMAGES_ONLY_MODEL, "n2n"),
        train_steps=args.train_steps or (10 if args.quick else 20),
        train_rounds=args.train_rounds or (1 if args.quick else 2),
        train_threads=args.train_threads, **volume_run.common_config(args),
    ), bench)


if __name__ == "__main__":
    sys.exit(main())
