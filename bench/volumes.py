"""What the volume benches (:mod:`bench.ct`, :mod:`bench.pet`) share, parameterised by the
path they measure (:class:`VolumeBenchPath`): a synthetic DICOM series written to a folder,
engine rounds per backend in alternating blocks, batch jobs timed on a local pool and on Ray
with 1 vs 2 workers, live slices through ``sigstream run <path>`` accounted for one by one, and
the run's record (machine, load after each phase) in :mod:`bench.volume_run`.

Each bench makes its own slices (CT phantoms, PET activity) and its own JSON around these
parts; the parts' keys are the same for every path, with the unit in the keys that carry one
(``max_abs_diff_vs_eager_hu``, ``..._bq_ml``). CPU time is this process's (and its waited-for
pool processes') user + system time, every engine thread counted: the figure that does not
move between machines the way wall time does.
"""

from __future__ import annotations

import dataclasses
import functools
import multiprocessing
import resource
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.harness import (
    PacedLoad,
    cpu_seconds,
    engine_totals,
    load_process,
    service_accounting,
)

if TYPE_CHECKING:
    from pydicom.uid import UID

    from engines.slices import SliceDenoiser
    from engines.spec import ModelSpec
    from stream.batch import BatchJob
    from stream.paths.volumes import SliceModality

__all__ = [
    "VolumeBenchPath",
    "backends",
    "batch_throughput",
    "cycled",
    "engine_throughput",
    "live_slices",
    "ratio",
    "source_main",
    "stored_slices",
    "weights_spec",
    "write_dicom_series",
]


ENGINE_BATCHES = (1, 8)
_B1_PER_ROUND = 4  # batch-1 calls per backend per round; then one batch-8 call
_INT16_MAX = float(np.iinfo(np.int16).max)


@dataclass(frozen=True, kw_only=True)
class VolumeBenchPath:
    """A volume path as its bench writes, denoises and serves it.

    Series: ``modality`` (DICOM's code, ``"CT"``, ``"PT"``) stored as int16 in files of SOP
    class ``sop_class``, ``slice_px``² slices of ``pixel_mm`` pixels, ``slice_step_mm`` apart;
    value = stored x slope + ``intercept`` in ``unit``, with ``slope`` fixed (CT) or, ``None``,
    one per slice (the slice's largest value over int16's largest, as PET scanners store
    them); ``tags``: further attributes of every file (PET's ``Units``). ``unit_key``: the unit
    in JSON keys. Engines: ``denoiser`` makes the path's :class:`~engines.slices.SliceDenoiser`
    from keywords ``spec backend batch cache_dir threads check``; ``foreground``: where the
    batch statistics are taken. Live: ``slices`` (the path's
    :class:`~stream.paths.volumes.SliceModality`) and ``max_batch`` (engine rows per call).
    ``volume_slices``: also report volumes per minute of a volume of this many slices.
    """

    name: str
    modality: str
    sop_class: UID
    unit: str
    unit_key: str
    slice_px: int
    pixel_mm: float
    slice_step_mm: float
    intercept: float
    slope: float | None
    patient_id: str
    series_description: str
    tags: tuple[tuple[str, str], ...] = ()
    denoiser: Callable[..., SliceDenoiser]
    foreground: Callable[[np.ndarray], np.ndarray]
    slices: SliceModality
    max_batch: int
    volume_slices: int | None = None

    def series_info(self) -> dict[str, Any]:
        """How the series is stored, for the JSON."""
        info: dict[str, Any] = {"dtype": "int16",
                                "slope": self.slope if self.slope is not None else "per slice",
                                "intercept": self.intercept,
                                "pixel_mm": round(self.pixel_mm, 4)}
        if self.slope is None:  # not CT's: its keys stay as they were
            info.update(slice_mm=self.slice_step_mm, unit=self.unit, tags=dict(self.tags))
        return info

    def volumes_per_min(self, slices_per_s: float | None) -> dict[str, float]:
        """``{"volumes_per_min": ...}`` for a volume of :attr:`volume_slices` (``{}`` without)."""
        if self.volume_slices is None or not slices_per_s:
            return {}
        return {"volumes_per_min": round(60.0 * slices_per_s / self.volume_slices, 2)}


# ---------------------------------------------------------------------------------------------
# Inputs


def weights_spec(spec: ModelSpec, tmp: Path, *, random_note: str = "random-init"
                 ) -> tuple[ModelSpec, str, Path | None]:
    """``(spec, "trained (...)", None)`` if its shipped weights exist; else a copy with seeded
    random weights of the same model saved in ``tmp``, ``random_note`` and that file (for the
    service's ``weights``). Timings do not depend on weight values."""
    if spec.weights_path.exists():
        return spec, f"trained ({spec.weights}, sha256 {spec.weights_sha256()[:12]})", None
    import torch

    torch.manual_seed(0)
    path = tmp / f"random_{spec.weights}"
    torch.save(spec.build().state_dict(), path)
    return dataclasses.replace(spec, weights=str(path)), random_note, path


def _ds(value: float) -> float:
    """``value`` as a DICOM decimal string holds it (at most 16 characters), read back."""
    return float(f"{value:.8g}")


def stored_slices(values: np.ndarray, path: VolumeBenchPath) -> tuple[np.ndarray, np.ndarray]:
    """``values`` (float32 ``(z, y, x)`` in the path's unit) as the scanner stores them: int16
    ``(z, y, x)`` and each slice's slope, float64 ``(z,)`` (value = stored x slope +
    intercept)."""
    v = np.asarray(values, np.float32)
    if path.slope is not None:
        slopes = np.full(len(v), path.slope)
    else:
        peaks = (v - path.intercept).reshape(len(v), -1).max(axis=1)
        slopes = np.array([_ds(p / _INT16_MAX) if p > 0 else 1.0 for p in peaks])
    info = np.iinfo(np.int16)
    stored = np.rint((v - path.intercept) / slopes[:, None, None].astype(np.float32))
    return np.clip(stored, info.min, info.max).astype(np.int16), slopes


def write_dicom_series(folder: Path, values: np.ndarray, path: VolumeBenchPath, *,
                       first_z_mm: float = 0.0) -> str:
    """Write ``values`` (float32 ``(z, y, x)`` in the path's unit) into ``folder`` as a new
    axial series of ``path``, one file per slice (``IM0000``...): int16 with the path's rescale
    (:func:`stored_slices`), ``pixel_mm`` pixels, ``slice_step_mm`` apart from ``first_z_mm``,
    explicit VR little endian. Returns its SeriesInstanceUID."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series, study, frame = generate_uid(), generate_uid(), generate_uid()
    stored, slopes = stored_slices(values, path)
    corner_mm = -0.5 * path.slice_px * path.pixel_mm
    for z, pixels in enumerate(stored):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = path.sop_class
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = path.sop_class, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientID, ds.PatientName = path.patient_id, "Phantom^Bench"
        ds.Modality, ds.SeriesNumber = path.modality, 1
        ds.SeriesDescription = path.series_description
        ds.InstanceNumber = z + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [corner_mm, corner_mm, _ds(first_z_mm + path.slice_step_mm * z)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [_ds(path.pixel_mm), _ds(path.pixel_mm)]
        ds.SliceThickness = _ds(path.slice_step_mm)
        ds.RescaleSlope, ds.RescaleIntercept = float(slopes[z]), path.intercept
        for keyword, value in path.tags:
            setattr(ds, keyword, value)
        ds.set_pixel_data(pixels, "MONOCHROME2", 16, generate_instance_uid=False)
        ds.save_as(folder / f"IM{z:04d}", enforce_file_format=True)
    return str(series)


def cycled(pool: np.ndarray, n: int, start: int = 0) -> np.ndarray:
    """``n`` slices of ``pool`` from ``start``, wrapping round."""
    return pool[(start + np.arange(n)) % len(pool)]


# ---------------------------------------------------------------------------------------------
# Engines


def backends() -> list[str]:
    """eager, onnxruntime, and tensorrt where ``auto`` picks it (a CUDA GPU and the package)."""
    from engines.engine import resolve_backend

    chosen = resolve_backend("auto")[0]
    return ["eager", "onnxruntime", *(["tensorrt"] if chosen == "tensorrt" else [])]


def engine_throughput(path: VolumeBenchPath, spec: ModelSpec, pool: np.ndarray, *, rounds: int,
                      threads: int, cache_dir: Path) -> dict[str, Any]:
    """Per backend, slices/s, ms per call and CPU ms per slice at batch 1 and 8, in
    ``rounds`` alternating rounds (each: 4 batch-1 calls and one batch-8 call per backend) so
    that background load hits every backend alike; the largest difference from eager on the
    last round's batch 8 (same inputs); each backend's ratios to eager."""
    names = backends()
    result: dict[str, Any] = {"backends": {}, "threads": threads, "rounds": rounds,
                              "slices_per_round": {"batch1": _B1_PER_ROUND, "batch8": 8}}
    denoisers: dict[str, SliceDenoiser] = {}
    # (backend, batch) -> [wall s, CPU s, slices, calls]
    tally: dict[tuple[str, int], list[float]] = {}
    last8: dict[str, np.ndarray] = {}
    try:
        for backend in names:
            denoiser = path.denoiser(spec=spec, backend=backend, batch=max(ENGINE_BATCHES),
                                     cache_dir=cache_dir, threads=threads, check=False)
            t0 = time.perf_counter()
            denoiser.start()
            build_s = time.perf_counter() - t0
            for batch in ENGINE_BATCHES:  # warm-up: first calls allocate and pick kernels
                denoiser.denoise(cycled(pool, batch))
            denoisers[backend] = denoiser
            result["backends"][backend] = {"engine_load_s": round(build_s, 3)}
        for r in range(rounds):
            for backend, denoiser in denoisers.items():
                calls = [(1, cycled(pool, 1, r * _B1_PER_ROUND + k))
                         for k in range(_B1_PER_ROUND)]
                calls.append((8, cycled(pool, 8, r)))
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
            **path.volumes_per_min(slices / wall),
        }
    for backend, out in last8.items():
        if backend != "eager" and "eager" in last8:
            result["backends"][backend][f"max_abs_diff_vs_eager_{path.unit_key}"] = round(
                float(np.max(np.abs(out - last8["eager"]))), 4)
    eager = result["backends"]["eager"]
    result["vs_eager"] = {
        backend: {
            **{f"batch{b}_throughput_ratio": ratio(row[f"batch{b}"]["slices_per_s"],
                                                    eager[f"batch{b}"]["slices_per_s"])
               for b in ENGINE_BATCHES},
            **{f"batch{b}_cpu_per_slice_ratio": ratio(row[f"batch{b}"]["cpu_ms_per_slice"],
                                                       eager[f"batch{b}"]["cpu_ms_per_slice"])
               for b in ENGINE_BATCHES},
        }
        for backend, row in result["backends"].items() if backend != "eager"
    }
    return result


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b`` to 2 decimals, ``None`` if either is missing or 0."""
    return round(a / b, 2) if a and b else None


# ---------------------------------------------------------------------------------------------
# Batch jobs over DICOM series


def _children_cpu_s() -> float:
    """CPU seconds of this process and of its children that ended and were waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _batch_run(path: VolumeBenchPath, job: BatchJob, inputs: Sequence[Path], out_dir: Path, *,
               workers: int, ray: str | None = None) -> dict[str, Any]:
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
    if path.volume_slices is not None:
        row["volumes_per_min"] = path.volumes_per_min(row["slices_per_s"]).get("volumes_per_min")
        row["volumes_per_min_in_items"] = path.volumes_per_min(
            row["slices_per_s_in_items"]).get("volumes_per_min")
    if report.failed:
        row["errors"] = [item.error for item in report.items if item.status != "ok"]
    if ray is None:
        # Pool processes are waited for when the pool closes, so their CPU time is in
        # RUSAGE_CHILDREN; Ray actors are children of the raylet, not of this process.
        row["cpu_ms_per_slice"] = round(1e3 * cpu / slices, 1) if slices else None
    return row


def _ratios(two: dict[str, Any], one: dict[str, Any]) -> dict[str, float | None]:
    """Slices/s of the first run over the second: wall, and inside the items."""
    return {key: ratio(two.get(key), one.get(key))
            for key in ("slices_per_s", "slices_per_s_in_items")}


def batch_throughput(path: VolumeBenchPath, spec: ModelSpec, values: np.ndarray, *,
                     backend: str, threads: int, ray: bool, description: str, tmp: Path,
                     cache_dir: Path, per_backend: Sequence[str] = ()) -> dict[str, Any]:
    """``values`` (float32 ``(n, y, x)``) written once as a series, then denoised end to end by
    :func:`stream.batch.run_batch` as ``sigstream denoise <path>`` does (DICOM read, denoise
    with the accuracy gate at load, DICOM write, statistics): the series whole with 1 worker,
    then the same slices as two series of half each (two items for two workers) with 1 worker
    (in this process) and with 2 (a local pool), then with 1 and 2 Ray actors on one local
    cluster (``ray``). ``per_backend``: first, the whole series on 1 worker with each of these
    backends, in this order (``per_backend`` and ``per_backend_vs_eager`` in the result)."""
    from stream.batch import BatchJob

    n = len(values)
    half = n // 2
    t0 = time.perf_counter()
    write_dicom_series(tmp / "in" / "single" / "series", values, path)
    write_dicom_series(tmp / "in" / "halves" / "a", values[:half], path)
    write_dicom_series(tmp / "in" / "halves" / "b", values[half:], path,
                       first_z_mm=path.slice_step_mm * half)
    write_s = time.perf_counter() - t0

    def job(backend: str) -> BatchJob:
        # As `sigstream denoise <path>` makes it: one engine per worker, `threads` each.
        return BatchJob(modality=path.modality,
                        denoiser=functools.partial(path.denoiser, spec=spec, backend=backend,
                                                   cache_dir=cache_dir, threads=threads),
                        description=description, foreground=path.foreground)

    single, halves = [tmp / "in" / "single"], [tmp / "in" / "halves"]
    result: dict[str, Any] = {
        "series": {"slices": n, "shape": [n, *values.shape[1:]], **path.series_info(),
                   "halves": [half, n - half], "write_s": round(write_s, 2),
                   "bytes": sum(f.stat().st_size for f in (tmp / "in").rglob("IM*"))},
    }
    if per_backend:
        rows = {name: _batch_run(path, job(name), single, tmp / f"out_{name}", workers=1)
                for name in per_backend}
        result["per_backend"] = rows
        if "eager" in rows:
            result["per_backend_vs_eager"] = {
                name: {**_ratios(row, rows["eager"]),
                       "cpu_per_slice": ratio(row.get("cpu_ms_per_slice"),
                                               rows["eager"].get("cpu_ms_per_slice"))}
                for name, row in rows.items() if name != "eager"}
    chosen = job(backend)
    runs: dict[str, Any] = {
        "single_series_1_worker": _batch_run(path, chosen, single, tmp / "out1", workers=1),
        "two_series_1_worker": _batch_run(path, chosen, halves, tmp / "out2", workers=1),
        "two_series_2_workers": _batch_run(path, chosen, halves, tmp / "out3", workers=2),
    }
    result["local"] = runs
    result["local_2_over_1"] = _ratios(runs["two_series_2_workers"],
                                       runs["two_series_1_worker"])
    result["ray"] = _ray_runs(path, chosen, halves, tmp, enabled=ray)
    return result


def _ray_runs(path: VolumeBenchPath, job: BatchJob, inputs: Sequence[Path], tmp: Path, *,
              enabled: bool) -> dict[str, Any]:
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
        out["actors_1"] = _batch_run(path, job, inputs, tmp / "out_ray1", workers=1, ray="local")
        out["actors_2"] = _batch_run(path, job, inputs, tmp / "out_ray2", workers=2, ray="local")
    finally:
        ray.shutdown()
    out["ray_2_over_1"] = _ratios(out["actors_2"], out["actors_1"])
    return out


# ---------------------------------------------------------------------------------------------
# Live slices


def source_main(*, endpoint: str, kind: str, slices: np.ndarray, slopes: np.ndarray,
                intercept: float, streams: int, rate_hz: float, seconds: float, start_ns: int,
                report: Any) -> None:
    """Push ``rate_hz * seconds`` slices of message kind ``kind`` (``slices``: int16
    ``(k, y, x)`` cycled, each with its ``slopes[k]`` and ``intercept``) on each of ``streams``
    series on a fixed schedule from ``start_ns`` (Unix ns), each stamped with the time it is
    sent; then send ``{"sent", "max_lag_ms", "elapsed_s"}`` on ``report`` (a pipe end).
    ``rate_hz``: slices/s per series."""
    from stream.wire import data_message, encode

    ids = [f"series-{i}" for i in range(streams)]
    with PacedLoad(endpoint=endpoint, ids=ids, rate_hz=rate_hz, seconds=seconds,
                   start_ns=start_ns, report=report) as load:
        for k, i, now in load.schedule:
            j = (k * streams + i) % len(slices)
            load.push.send_multipart(encode(data_message(kind, ids[i], k, slices[j], t_ns=now,
                                                         slope=float(slopes[j]),
                                                         intercept=float(intercept))))


def _engine_stats(stats: dict[str, dict[str, Any]]) -> dict[str, Any]:
    batches, rows, engine_s = engine_totals(stats)
    return {"batches": batches,
            "slices_per_batch_mean": round(rows / batches, 2) if batches else None,
            "engine_ms_per_slice": round(1e3 * engine_s / rows, 1) if rows else None}


def live_slices(path: VolumeBenchPath, pool: np.ndarray, weights: Path | None, *, model: str,
                backend: str, threads: int, series: int, rate_hz: float, seconds: float,
                workers: int, drain_s: float, cache_dir: Path) -> dict[str, Any]:
    """``sigstream run <path>`` as a real :class:`~stream.service.Service` in this process
    (``workers`` engine workers of ``threads`` threads, ``weights`` instead of the shipped
    ones); a source process pushes ``pool``'s slices (float32 ``(k, y, x)`` in the path's
    unit, sent stored as int16 with their rescale) on ``series`` series at ``rate_hz`` slices/s
    in all for ``seconds``; this process subscribes and measures capture-to-result latency per
    slice and accounts for every slice sent, next to the service's own summary and the CPU ms
    per slice of each stage process."""
    from bench.pipeline import _collect
    from stream.paths.volumes import SliceSettings
    from stream.results import ResultsClient
    from stream.service import Service, ServiceConfig

    service_config = ServiceConfig(
        path=path.name, ingest="tcp://127.0.0.1:*", publish="tcp://127.0.0.1:*",
        backend=backend, model=model, weights=weights, settings=SliceSettings(),
        workers=workers, threads=threads, max_batch=path.max_batch, cache_dir=cache_dir,
    )
    stored, slopes = stored_slices(pool, path)
    mp = multiprocessing.get_context("spawn")
    t0 = time.perf_counter()
    with Service(service_config) as service:
        start_s = time.perf_counter() - t0
        names = sorted({str(r["backend"]) for r in service.stages.values() if "backend" in r})
        pids = service.pids
        cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
        # lossless: the measuring end must not lose anything itself
        with ResultsClient(service.bound_publish, lossless=True, settle_s=0.5) as results, \
                load_process(mp, source_main, name=f"bench-{path.name}-source",
                             endpoint=service.bound_ingest, kind=path.slices.kind,
                             slices=stored, slopes=slopes, intercept=path.intercept,
                             streams=series, rate_hz=rate_hz / series, seconds=seconds,
                             # a spawned source needs a few seconds to import on a busy machine
                             start_ns=time.time_ns() + 3_000_000_000) as (source, report):
            out = _collect(results, source, report, drain_s=drain_s)
        cpu = {name: cpu_seconds(pid) - cpu0[name] for name, pid in pids.items()}
        service.stop()
        summary = service.summary()
        stats = service.stats()
    account = service_accounting(summary)
    errors, dropped = sum(out["errors"].values()), sum(out["dropped"].values())
    received = max(1, account["received"])
    return {
        "series": series, "offered_slices_per_s": rate_hz,
        "seconds": seconds, "slice": [*pool.shape[1:], "int16"],
        "workers": workers, "max_batch": path.max_batch, "backend": names,
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
