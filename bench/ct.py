"""CT denoising benchmark: engines, batch jobs over DICOM series, and live slices, side by side
in one run on this machine. Prints JSON.

    python -m bench.ct [--model unet] [--slices 300] [--quick] [--json PATH] [--no-ray]

1. **engines**: 512² phantom slices (:func:`devices.ct_phantom.anatomical_slice`) through
   :class:`engines.ct.CtDenoiser` on each backend (eager, onnxruntime; tensorrt where a CUDA
   GPU and torch_tensorrt are present) at batch 1 and batch 8, in alternating blocks so that
   background load hits every backend alike: slices/s, ms per call, CPU ms per slice (this
   process's CPU time over the slices: every thread of the engine counted), build time, and the
   largest difference from eager (HU).
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
import contextlib
import dataclasses
import functools
import multiprocessing
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zmq

if not __package__:  # run as a file
    import _script

    _script.rerun_as_module()

from bench.harness import cpu_seconds, emit, load_process, push_socket, wait_until
from bench.machine import loaded_machine_notes, machine_info

if TYPE_CHECKING:
    from engines.spec import ModelSpec

__all__ = ["CtBenchConfig", "bench", "main", "source_main", "weights_spec", "write_dicom_series"]

SLICE_PX = 512
#: Stored value = HU - INTERCEPT (slope 1), as most CT scanners store int16 slices.
SLOPE, INTERCEPT = 1.0, -1024.0
PIXEL_MM = 500.0 / SLICE_PX  # the phantom's 500 mm field of view
SLICE_STEP_MM = 1.0
ENGINE_BATCHES = (1, 8)
_B1_PER_ROUND = 4  # batch-1 calls per backend per round; then one batch-8 call


@dataclass(frozen=True, kw_only=True)
class CtBenchConfig:
    """One run. ``model``: a key of :data:`engines.ct.CT_SPECS`. ``slices``: slices of the batch
    series. ``engine_rounds``: alternating rounds of part 1 (each: 4 batch-1 calls and one
    batch-8 call per backend). ``backend``: parts 2 and 3. ``threads``: intra-op threads of
    every engine. ``ray``: run the Ray part. ``live_rate_hz``: slices/s of all live series
    together; ``live_seconds``: how long they are sent; ``live_workers``: the service's engine
    workers; ``drain_s``: longest wait for answers after the last slice is sent."""

    model: str = "unet"
    slices: int = 300
    engine_rounds: int = 6
    backend: str = "auto"
    threads: int = 1
    ray: bool = True
    live_series: int = 2
    live_rate_hz: float = 4.0
    live_seconds: float = 15.0
    live_workers: int = 2
    drain_s: float = 60.0
    phantoms: int = 16

    def __post_init__(self) -> None:
        for name in ("slices", "engine_rounds", "threads", "live_series", "live_workers",
                     "phantoms"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.slices < 2:
            raise ValueError("slices must be at least 2 (the series is also split in two)")
        if not (self.live_rate_hz > 0 and self.live_seconds > 0 and self.drain_s > 0):
            raise ValueError("live_rate_hz, live_seconds and drain_s must be > 0")


# ---------------------------------------------------------------------------------------------
# Inputs


def weights_spec(spec: ModelSpec, tmp: Path) -> tuple[ModelSpec, str]:
    """``spec`` and ``"trained (...)"`` if its shipped weights exist; else a copy with seeded
    random weights saved in ``tmp`` and ``"random-init"`` (as :mod:`bench.engine_latency`)."""
    if spec.weights_path.exists():
        return spec, f"trained ({spec.weights}, sha256 {spec.weights_sha256()[:12]})"
    import torch

    torch.manual_seed(0)
    path = tmp / f"random_{spec.weights}"
    torch.save(spec.build().state_dict(), path)
    return dataclasses.replace(spec, weights=str(path)), "random-init"


def phantom_pool(n: int) -> np.ndarray:
    """``n`` distinct 512² anatomical phantom slices (seeds 0..n-1): float32 HU ``(n, 512,
    512)``, cycled wherever more slices are needed (the time per slice does not depend on
    which anatomy it shows)."""
    from devices.ct_phantom import anatomical_slice

    return np.stack([anatomical_slice(SLICE_PX, seed=seed).hu for seed in range(n)]).astype(
        np.float32)


def stored_int16(hu: np.ndarray) -> np.ndarray:
    """HU as the int16 a scanner stores with slope 1, intercept -1024."""
    info = np.iinfo(np.int16)
    return np.clip(np.rint((hu - INTERCEPT) / SLOPE), info.min, info.max).astype(np.int16)


def write_dicom_series(folder: Path, hu: np.ndarray, *, first_z_mm: float = 0.0) -> str:
    """Write ``hu`` (float32 HU ``(z, y, x)``) into ``folder`` as a new axial CT series, one
    file per slice (``IM0000``...): int16 with slope 1, intercept -1024, 0.98 mm pixels,
    1 mm apart from ``first_z_mm``, explicit VR little endian. Returns its SeriesInstanceUID."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series, study, frame = generate_uid(), generate_uid(), generate_uid()
    for z, pixels in enumerate(stored_int16(hu)):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientID, ds.PatientName = "BENCH-CT", "Phantom^Bench"
        ds.Modality, ds.SeriesDescription, ds.SeriesNumber = "CT", "BENCH 1mm", 1
        ds.InstanceNumber = z + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [-250.0, -250.0, first_z_mm + SLICE_STEP_MM * z]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [PIXEL_MM, PIXEL_MM]
        ds.SliceThickness = SLICE_STEP_MM
        ds.RescaleSlope, ds.RescaleIntercept = SLOPE, INTERCEPT
        ds.set_pixel_data(pixels, "MONOCHROME2", 16, generate_instance_uid=False)
        ds.save_as(folder / f"IM{z:04d}", enforce_file_format=True)
    return str(series)


def _cycled(pool: np.ndarray, n: int, start: int = 0) -> np.ndarray:
    return pool[(start + np.arange(n)) % len(pool)]


# ---------------------------------------------------------------------------------------------
# 1. Engines


def _backends() -> list[str]:
    from engines.engine import resolve_backend

    chosen = resolve_backend("auto")[0]
    return ["eager", "onnxruntime", *(["tensorrt"] if chosen == "tensorrt" else [])]


def engine_throughput(spec: ModelSpec, pool: np.ndarray, *, rounds: int, threads: int,
                      cache_dir: Path) -> dict[str, Any]:
    """Part 1: per backend, slices/s, ms per call and CPU ms per slice at batch 1 and 8."""
    from engines.ct.denoise import CtDenoiser

    backends = _backends()
    result: dict[str, Any] = {"backends": {}, "threads": threads, "rounds": rounds,
                              "slices_per_round": {"batch1": _B1_PER_ROUND, "batch8": 8}}
    denoisers: dict[str, CtDenoiser] = {}
    # (backend, batch) -> [wall s, CPU s, slices, calls]
    tally: dict[tuple[str, int], list[float]] = {}
    last8: dict[str, np.ndarray] = {}
    try:
        for backend in backends:
            denoiser = CtDenoiser(spec=spec, backend=backend, batch=max(ENGINE_BATCHES),
                                  cache_dir=cache_dir, threads=threads, check=False)
            t0 = time.perf_counter()
            denoiser.start()
            build_s = time.perf_counter() - t0
            for batch in ENGINE_BATCHES:  # warm-up: first calls allocate and pick kernels
                denoiser.denoise(_cycled(pool, batch))
            denoisers[backend] = denoiser
            result["backends"][backend] = {"engine_load_s": round(build_s, 3)}
        for r in range(rounds):
            for backend, denoiser in denoisers.items():
                calls = [(1, _cycled(pool, 1, r * _B1_PER_ROUND + k))
                         for k in range(_B1_PER_ROUND)]
                calls.append((8, _cycled(pool, 8, r)))
                for batch, x in calls:
                    c0, t0 = time.process_time(), time.perf_counter()
                    out = denoiser.denoise(x)
                    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                    row = tally.setdefault((backend, batch), [0.0, 0.0, 0, 0])
                    row[0] += wall
                    row[1] += cpu
                    row[2] += len(x)
                    row[3] += 1
                    if batch == 8 and r == rounds - 1:
                        last8[backend] = out
    finally:
        for denoiser in denoisers.values():
            denoiser.close()
    for (backend, batch), (wall, cpu, slices, n_calls) in tally.items():
        result["backends"][backend][f"batch{batch}"] = {
            "slices_per_s": round(slices / wall, 2),
            "ms_per_call": round(1e3 * wall / n_calls, 1),
            "cpu_ms_per_slice": round(1e3 * cpu / slices, 1),
            "slices": int(slices),
        }
    # Same inputs (the last round's batch 8) on every backend.
    for backend, out in last8.items():
        if backend != "eager" and "eager" in last8:
            result["backends"][backend]["max_abs_diff_vs_eager_hu"] = round(
                float(np.max(np.abs(out - last8["eager"]))), 4)
    eager = result["backends"]["eager"]
    result["vs_eager"] = {
        backend: {f"batch{b}_throughput_ratio": round(
            row[f"batch{b}"]["slices_per_s"] / eager[f"batch{b}"]["slices_per_s"], 2)
            for b in ENGINE_BATCHES}
        for backend, row in result["backends"].items() if backend != "eager"
    }
    return result


# ---------------------------------------------------------------------------------------------
# 2. Batch jobs over DICOM series


def _children_cpu_s() -> float:
    """CPU seconds of this process and of its children that ended and were waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _batch_run(job: Any, inputs: Sequence[Path], out_dir: Path, *, workers: int,
               ray: str | None = None) -> dict[str, Any]:
    """One :func:`stream.batch.run_batch` run, its outputs removed after."""
    from stream.batch import run_batch

    c0, t0 = _children_cpu_s(), time.perf_counter()
    report = run_batch(inputs, out_dir, job, workers=workers, ray=ray, progress=False)
    wall, cpu = time.perf_counter() - t0, _children_cpu_s() - c0
    shutil.rmtree(out_dir, ignore_errors=True)
    slices = sum(item.slices or 0 for item in report.items if item.status == "ok")
    # Time inside the items (read, denoise, write, statistics), spread over the workers that
    # had one; the rest of the wall time is starting workers, loading engines (with the
    # accuracy gate) and handing items out.
    in_items_s = (sum(item.seconds or 0.0 for item in report.items)
                  / max(1, min(workers, len(report.items))))
    row: dict[str, Any] = {
        "runner": report.runner,
        "workers": report.workers,
        "items": [{"slices": item.slices, "seconds": item.seconds, "attempts": item.attempts}
                  for item in report.items],
        "slices": slices,
        "seconds": round(wall, 2),
        "slices_per_s": round(slices / wall, 2) if wall else None,
        "slices_per_s_in_items": round(slices / in_items_s, 2) if in_items_s else None,
        "outside_items_s": round(wall - in_items_s, 2),
        "failed": report.failed,
    }
    if report.failed:
        row["errors"] = [item.error for item in report.items if item.status != "ok"]
    if ray is None:
        # Pool processes are waited for when the pool closes, so their CPU time is in
        # RUSAGE_CHILDREN; Ray actors are children of the raylet, not of this process.
        row["cpu_ms_per_slice"] = round(1e3 * cpu / slices, 1) if slices else None
    return row


def _ratios(two: dict[str, Any], one: dict[str, Any]) -> dict[str, float | None]:
    """Slices/s of the 2-worker run over the 1-worker run: wall, and inside the items."""
    out: dict[str, float | None] = {}
    for key in ("slices_per_s", "slices_per_s_in_items"):
        a, b = two.get(key), one.get(key)
        out[key] = round(a / b, 2) if a and b else None
    return out


def batch_throughput(spec: ModelSpec, pool: np.ndarray, *, config: CtBenchConfig, tmp: Path,
                     cache_dir: Path) -> dict[str, Any]:
    """Part 2: the series denoised end to end by ``run_batch`` on 1 and 2 workers / actors."""
    from engines.ct.denoise import CtDenoiser
    from stream.batch import BatchJob
    from stream.paths.ct.commands import body_mask

    n = config.slices
    half = n // 2
    hu = _cycled(pool, n)
    t0 = time.perf_counter()
    write_dicom_series(tmp / "in" / "single" / "series", hu)
    write_dicom_series(tmp / "in" / "halves" / "a", hu[:half])
    write_dicom_series(tmp / "in" / "halves" / "b", hu[half:], first_z_mm=SLICE_STEP_MM * half)
    write_s = time.perf_counter() - t0
    # As `sigstream denoise ct` makes it: one engine per worker, one thread each.
    job = BatchJob(
        modality="CT",
        denoiser=functools.partial(CtDenoiser, spec=spec, backend=config.backend,
                                   cache_dir=cache_dir, threads=config.threads),
        description=f"bench.ct {config.model}", foreground=body_mask,
    )
    single, halves = [tmp / "in" / "single"], [tmp / "in" / "halves"]
    runs: dict[str, Any] = {
        "single_series_1_worker": _batch_run(job, single, tmp / "out1", workers=1),
        "two_series_1_worker": _batch_run(job, halves, tmp / "out2", workers=1),
        "two_series_2_workers": _batch_run(job, halves, tmp / "out3", workers=2),
    }
    result: dict[str, Any] = {
        "series": {"slices": n, "shape": [n, SLICE_PX, SLICE_PX], "dtype": "int16",
                   "slope": SLOPE, "intercept": INTERCEPT, "pixel_mm": round(PIXEL_MM, 4),
                   "halves": [half, n - half], "write_s": round(write_s, 2),
                   "bytes": sum(f.stat().st_size for f in (tmp / "in").rglob("IM*"))},
        "local": runs,
        "local_2_over_1": _ratios(runs["two_series_2_workers"], runs["two_series_1_worker"]),
    }
    result["ray"] = _ray_runs(job, halves, tmp, enabled=config.ray)
    return result


def _ray_runs(job: Any, inputs: Sequence[Path], tmp: Path, *, enabled: bool) -> dict[str, Any]:
    if not enabled:
        return {"skipped": "--no-ray"}
    try:
        import ray
    except ImportError as exc:
        return {"skipped": f"Ray is not importable: {exc}"}
    if ray.is_initialized():
        return {"skipped": "Ray was already initialised in this process"}
    # One local cluster for both runs (run_batch uses a cluster that is already up), as
    # `--ray` would start it, so the 1-vs-2 ratio compares actors, not cluster starts.
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    out: dict[str, Any] = {"cluster_start_s": round(time.perf_counter() - t0, 2),
                           "cpu_ms_per_slice": "not measured (actors are the raylet's children)"}
    try:
        out["actors_1"] = _batch_run(job, inputs, tmp / "out_ray1", workers=1, ray="local")
        out["actors_2"] = _batch_run(job, inputs, tmp / "out_ray2", workers=2, ray="local")
    finally:
        ray.shutdown()
    out["ray_2_over_1"] = _ratios(out["actors_2"], out["actors_1"])
    return out


# ---------------------------------------------------------------------------------------------
# 3. Live slices


def source_main(*, endpoint: str, slices: np.ndarray, streams: int, rate_hz: float,
                seconds: float, start_ns: int, report: Any) -> None:
    """Push ``rate_hz * seconds`` int16 slices (``slices`` cycled, slope 1, intercept -1024)
    on each of ``streams`` series on a fixed schedule from ``start_ns`` (Unix ns), each stamped
    with the time it is sent; then send ``{"sent", "max_lag_ms", "elapsed_s"}`` on ``report``
    (a pipe end). ``rate_hz``: slices/s per series."""
    from stream.paths.ct.spec import CT_SLICES
    from stream.wire import data_message, encode

    ids = [f"series-{i}" for i in range(streams)]
    per_stream = max(1, round(rate_hz * seconds))
    period_ns = 1e9 / rate_hz
    ctx = zmq.Context()
    push = push_socket(ctx, endpoint)
    max_lag = 0
    for k in range(per_stream):
        for i, stream in enumerate(ids):
            due = start_ns + int((k + i / streams) * period_ns)
            now = wait_until(due)
            max_lag = max(max_lag, now - due)
            pixels = slices[(k * streams + i) % len(slices)]
            push.send_multipart(encode(data_message(CT_SLICES.kind, stream, k, pixels, t_ns=now,
                                                    slope=SLOPE, intercept=INTERCEPT)))
    elapsed = (time.time_ns() - start_ns) / 1e9
    push.close()
    ctx.term()
    report.send({"sent": {s: per_stream for s in ids}, "max_lag_ms": max_lag / 1e6,
                 "elapsed_s": elapsed})
    report.close()


def _engine_stats(stats: dict[str, dict[str, Any]]) -> dict[str, Any]:
    rows = batches = 0
    engine_s = 0.0
    for name, snap in stats.items():
        if name.startswith("worker"):
            counts, rows_sum, _ = snap["batch_rows"]
            batches += sum(counts)
            rows += int(rows_sum)
            engine_s += float(snap["engine_s"][1])
    return {"batches": batches,
            "slices_per_batch_mean": round(rows / batches, 2) if batches else None,
            "engine_ms_per_slice": round(1e3 * engine_s / rows, 1) if rows else None}


def live_slices(pool: np.ndarray, weights: Path | None, *, config: CtBenchConfig,
                cache_dir: Path) -> dict[str, Any]:
    """Part 3: slices through a running CT service, accounted for one by one."""
    from bench.pipeline import _collect
    from stream.paths.ct.spec import CT_MAX_BATCH
    from stream.paths.slices import SliceSettings
    from stream.results import ResultsClient
    from stream.service import Service, ServiceConfig

    service_config = ServiceConfig(
        path="ct", ingest="tcp://127.0.0.1:*", publish="tcp://127.0.0.1:*",
        backend=config.backend, model=config.model, weights=weights, settings=SliceSettings(),
        workers=config.live_workers, threads=config.threads, max_batch=CT_MAX_BATCH,
        cache_dir=cache_dir,
    )
    mp = multiprocessing.get_context("spawn")
    per_series_hz = config.live_rate_hz / config.live_series
    t0 = time.perf_counter()
    with Service(service_config) as service:
        start_s = time.perf_counter() - t0
        backends = sorted({str(r["backend"]) for r in service.stages.values() if "backend" in r})
        pids = service.pids
        cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
        # lossless: the measuring end must not lose anything itself
        with ResultsClient(service.bound_publish, lossless=True, settle_s=0.5) as results, \
                load_process(mp, source_main, name="bench-ct-source",
                             endpoint=service.bound_ingest, slices=stored_int16(pool[:8]),
                             streams=config.live_series, rate_hz=per_series_hz,
                             seconds=config.live_seconds,
                             # a spawned source needs a few seconds to import on a busy machine
                             start_ns=time.time_ns() + 3_000_000_000) as (source, report):
            out = _collect(results, source, report, drain_s=config.drain_s)
        cpu = {name: cpu_seconds(pid) - cpu0[name] for name, pid in pids.items()}
        service.stop()
        summary = service.summary()
        stats = service.stats()
    account = {
        "received": sum(s.received for s in summary.values()),
        "delivered": sum(s.delivered for s in summary.values()),
        "errors": sum(s.errors_total for s in summary.values()),
        "dropped": sum(s.dropped_total for s in summary.values()),
        "unexplained": sum(s.unexplained for s in summary.values()),
    }
    errors, dropped = sum(out["errors"].values()), sum(out["dropped"].values())
    received = max(1, account["received"])
    return {
        "series": config.live_series, "offered_slices_per_s": config.live_rate_hz,
        "seconds": config.live_seconds, "slice": [SLICE_PX, SLICE_PX, "int16"],
        "workers": config.live_workers, "max_batch": CT_MAX_BATCH, "backend": backends,
        "service_start_s": round(start_s, 2),
        "sent": out["sent"], "results": out["delivered"], "errors": out["errors"],
        "dropped": out["dropped"], "unexplained": out["unexplained"],
        "duplicates": out["duplicates"],
        "sent_equals_results_plus_errors_plus_dropped":
            out["sent"] == out["delivered"] + errors + dropped,
        "latency_ms": out["latency_ms"], "results_per_s": out["results_per_s"],
        "source_max_lag_ms": out["source_max_lag_ms"],
        "service_accounting": account,
        "engine": _engine_stats(stats),
        "cpu_ms_per_slice": {**{name: round(1e3 * c / received, 1) for name, c in cpu.items()},
                             "total": round(1e3 * sum(cpu.values()) / received, 1)},
    }


# ---------------------------------------------------------------------------------------------
# The run


@contextlib.contextmanager
def _phase(loads: dict[str, float], name: str) -> Iterator[None]:
    try:
        yield
    finally:
        loads[name] = round(os.getloadavg()[0], 2)


def bench(config: CtBenchConfig) -> dict[str, Any]:
    """All three parts (see the module docstring), as a dict ready for JSON."""
    from engines.ct.specs import CT_SPECS
    from engines.engine import resolve_backend

    if config.model not in CT_SPECS:
        raise ValueError(f"unknown CT model {config.model!r}; choose from {sorted(CT_SPECS)}")
    machine = machine_info()
    result: dict[str, Any] = {
        "bench": "ct",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "config": {**dataclasses.asdict(config),
                   "backend_resolved": resolve_backend(config.backend)[0]},
    }
    loads: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ct-") as tmp_name:
        tmp = Path(tmp_name)
        cache_dir = tmp / "engine-cache"
        spec, weights_note = weights_spec(CT_SPECS[config.model], tmp)
        result["weights"] = weights_note
        live_weights = None if weights_note != "random-init" else Path(spec.weights)
        t0 = time.perf_counter()
        pool = phantom_pool(min(config.phantoms, config.slices))
        result["config"]["phantom_pool_s"] = round(time.perf_counter() - t0, 2)
        with _phase(loads, "engines"):
            result["engines"] = engine_throughput(spec, pool, rounds=config.engine_rounds,
                                                  threads=config.threads, cache_dir=cache_dir)
        with _phase(loads, "batch"):
            result["batch"] = batch_throughput(spec, pool, config=config, tmp=tmp,
                                               cache_dir=cache_dir)
        with _phase(loads, "live"):
            result["live"] = live_slices(pool, live_weights, config=config, cache_dir=cache_dir)
    machine["load_avg_1m_after"] = loads
    machine["loaded_machine"] = loaded_machine_notes(machine, loads)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ct",
                                     description=__doc__.split("\n\n")[0])
    from engines.ct.specs import CT_SPECS  # no torch

    parser.add_argument("--model", default="unet", choices=sorted(CT_SPECS))
    parser.add_argument("--slices", type=int, default=None,
                        help="slices of the batch series (default 300; --quick 24)")
    parser.add_argument("--quick", action="store_true",
                        help="24 slices, 2 engine rounds, 5 s of live slices")
    parser.add_argument("--engine-rounds", type=int, default=None,
                        help="alternating rounds of part 1 (default 6; --quick 2)")
    parser.add_argument("--backend", default="auto",
                        help="backend of the batch jobs and the service (auto, eager, "
                             "onnxruntime, tensorrt)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per engine")
    parser.add_argument("--live-series", type=int, default=2)
    parser.add_argument("--live-rate", type=float, default=4.0,
                        help="live slices/s, all series together")
    parser.add_argument("--live-seconds", type=float, default=None,
                        help="how long live slices are sent (default 15; --quick 5)")
    parser.add_argument("--live-workers", type=int, default=2, help="the service's workers")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray runs")
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    try:
        config = CtBenchConfig(
            model=args.model,
            slices=args.slices if args.slices is not None else (24 if args.quick else 300),
            engine_rounds=args.engine_rounds or (2 if args.quick else 6),
            backend=args.backend, threads=args.threads, ray=not args.no_ray,
            live_series=args.live_series, live_rate_hz=args.live_rate,
            live_seconds=args.live_seconds or (5.0 if args.quick else 15.0),
            live_workers=args.live_workers, phantoms=8 if args.quick else 16,
        )
    except ValueError as exc:
        parser.error(str(exc))
    emit(bench(config), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
