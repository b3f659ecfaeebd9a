"""Batch jobs over volumes: read each item, denoise it, write it back, on many workers.

An item is one DICOM series or one NIfTI file (:func:`devices.volumes.find_inputs`). Each is
read, denoised and written back in its input's form (:func:`devices.volumes.write_volume`,
atomic: no half-written series, Ctrl-C included) by a worker that loaded its engine once: by
default a local pool of worker processes (``workers``), or a pool of Ray actors (``ray``: a
local cluster started for the run, or the address of a running one).

Why actors and not Ray Data: the unit of work is a series (a folder of files read, denoised as
a whole and written atomically), not rows of a table, and the expensive step is loading the
engine — an actor pool loads it once per actor and keeps it, which is what Ray Data's
``map_batches`` with a class would do too, but without a dataset to describe DICOM series or a
sink that writes them.

A failed item is tried once more (a worker may have died, or run out of memory), unless its
input was refused (:class:`~devices.errors.VolumeError`, an output that exists: the same input
would fail again); the others finish either way. The report (:class:`BatchReport`, JSON with
``--report``) has per item: slices, seconds, attempts, and statistics of the values before and
after (inside the foreground: mean, SD, 1st/99th percentiles, and a noise estimate). Paths
declare a job (:class:`BatchJob`) and this module runs it; it names no path.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from devices.errors import SigstreamError, VolumeError

__all__ = ["BatchJob", "BatchReport", "ItemReport", "VolumeDenoiser", "noise_sd", "run_batch"]

_NOT_RETRIED = (VolumeError, FileExistsError)
#: Slices denoised between two progress reports of a series.
_CHUNK_SLICES = 8


class VolumeDenoiser(Protocol):
    """What a job's workers run: ``start()`` loads the engine (once per worker), ``denoise``
    maps a float32 ``(z, y, x)`` volume in physical units to one of the same shape."""

    def start(self) -> Any: ...

    def denoise(self, values: np.ndarray, spacing_mm: Sequence[float] | None = None
                ) -> np.ndarray: ...

    def close(self) -> None: ...


@dataclass(frozen=True, kw_only=True)
class BatchJob:
    """A path's batch job, picklable (it travels to worker processes and Ray actors).

    ``modality``: what the inputs must be (``"CT"``; others are refused unless ``force``).
    ``denoiser``: makes the worker's :class:`VolumeDenoiser`. ``description``: what was done,
    appended to the output's series description. ``foreground``: the values the statistics
    describe (e.g. inside the body), ``None`` for all. ``rescale``: how DICOM output stores
    values beyond the input's stored range (:data:`devices.volumes.RescaleMode`).
    """

    modality: str
    denoiser: Callable[[], VolumeDenoiser]
    description: str
    force: bool = False
    foreground: Callable[[np.ndarray], np.ndarray] | None = None
    rescale: str = "input"


@dataclass
class ItemReport:
    """One item's outcome: ``status`` ``"ok"`` or ``"failed"`` (``error``: one line)."""

    input: str
    output: str
    status: str = "failed"
    error: str | None = None
    attempts: int = 0
    slices: int | None = None
    seconds: float | None = None
    series_uid: str | None = None
    clipped_voxels: int | None = None
    before: dict[str, float] | None = None
    after: dict[str, float] | None = None


@dataclass
class BatchReport:
    runner: str
    workers: int
    items: list[ItemReport] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        return sum(item.status != "ok" for item in self.items)

    def to_json(self) -> dict[str, Any]:
        return {"runner": self.runner, "workers": self.workers, "seconds": self.seconds,
                "items": [asdict(item) for item in self.items],
                "ok": len(self.items) - self.failed, "failed": self.failed}


def noise_sd(values: np.ndarray) -> float:
    """Noise SD of an image or volume, slice by slice (Immerkær 1996: the Laplacian-difference
    mask, which cancels smooth structure, averaged over all pixels of each slice)."""
    from scipy.signal import convolve2d

    mask = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float64)
    slices = np.asarray(values, np.float64).reshape(-1, *np.shape(values)[-2:])
    h, w = slices.shape[1:]
    if h < 3 or w < 3:
        return float("nan")
    total = sum(float(np.abs(convolve2d(s, mask, mode="valid")).sum()) for s in slices)
    return float(np.sqrt(np.pi / 2) * total / (6.0 * len(slices) * (h - 2) * (w - 2)))


def _statistics(values: np.ndarray, foreground: np.ndarray | None) -> dict[str, float]:
    inside = values if foreground is None else values[foreground]
    if inside.size == 0:
        inside = values.ravel()
    p1, p99 = np.percentile(inside, [1, 99])
    return {"mean": round(float(inside.mean()), 3), "sd": round(float(inside.std()), 3),
            "p1": round(float(p1), 3), "p99": round(float(p99), 3),
            "noise_sd": round(noise_sd(values), 3)}


class _Worker:
    """One worker's state: the job and its started denoiser (a process of the local pool, or a
    Ray actor)."""

    def __init__(self, job: BatchJob) -> None:
        self.job = job
        self.denoiser = job.denoiser()
        self.denoiser.start()

    def run(self, source: Any, out_path: Path,
            progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        """Read, denoise and write one item; ``progress(slices done, slices)`` after each
        chunk of slices."""
        from devices.volumes import read_source, write_volume

        t0 = time.perf_counter()
        job = self.job
        volume = read_source(source, modality=job.modality, force=job.force)
        values, n = volume.values, volume.values.shape[0]
        denoised = np.empty(values.shape, np.float32)
        for z in range(0, n, _CHUNK_SLICES):
            denoised[z:z + _CHUNK_SLICES] = self.denoiser.denoise(values[z:z + _CHUNK_SLICES],
                                                                  volume.spacing_mm)
            if progress is not None:
                progress(min(z + _CHUNK_SLICES, n), n)
        written = write_volume(volume, denoised, out_path, description_suffix=job.description,
                               rescale=job.rescale)  # type: ignore[arg-type]
        mask = None if job.foreground is None else job.foreground(volume.values)
        return {"slices": int(volume.values.shape[0]), "series_uid": written.series_uid,
                "output": str(written.path), "clipped_voxels": written.clipped_voxels,
                "before": _statistics(volume.values, mask),
                "after": _statistics(denoised, mask),
                "seconds": round(time.perf_counter() - t0, 3)}


# The worker of a pool process, made by the pool's initializer (ProcessPoolExecutor's way of
# giving each process state that lives as long as it does).
_process_worker: _Worker | None = None


_progress_queue: Any = None


def _start_process_worker(job: BatchJob, progress: Any) -> None:
    global _process_worker, _progress_queue
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _progress_queue = progress
    _process_worker = _Worker(job)


def _run_in_process(index: int, source: Any, out_path: Path) -> dict[str, Any]:
    assert _process_worker is not None
    queue = _progress_queue
    return _process_worker.run(source, out_path,
                               lambda done, total: queue.put((index, done, total)))


def run_batch(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    job: BatchJob,
    *,
    workers: int = 1,
    ray: str | None = None,
    report_path: Path | None = None,
    progress: bool = True,
) -> BatchReport:
    """Run ``job`` on every item of ``inputs`` (files and folders), writing under ``out_dir``.

    ``workers``: worker processes (1: in this process), or Ray actors with ``ray`` (``"local"``
    starts a local cluster; otherwise the address of a running one). Writes ``report_path``
    (JSON) at the end. Raises :class:`~devices.errors.VolumeError` only if ``out_dir`` cannot
    be made; every item's fault is in the report.
    """
    from devices.volumes import find_inputs, output_locations

    if workers < 1:
        raise VolumeError(f"workers must be at least 1, got {workers}")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VolumeError(f"{out}: cannot make the output folder: {exc.strerror}") from exc
    if not os.access(out, os.W_OK | os.X_OK):
        raise VolumeError(f"{out}: the output folder is not writable")
    sources = find_inputs(inputs)
    locations = output_locations(sources, out)
    report = BatchReport(runner="ray" if ray else ("local" if workers > 1 else "inline"),
                         workers=workers)
    report.items = [ItemReport(input=_name(s), output=str(p)) for s, p in zip(sources, locations,
                                                                             strict=True)]
    t0 = time.perf_counter()
    bar = _Progress([item.input for item in report.items], enabled=progress)
    try:
        if ray:
            _run_ray(job, sources, locations, report, workers, ray, bar)
        elif workers > 1:
            _run_pool(job, sources, locations, report, workers, bar)
        else:
            _run_inline(job, sources, locations, report, bar)
    finally:
        bar.close()
        report.seconds = round(time.perf_counter() - t0, 3)
        if report_path is not None:
            report_path.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return report


def _name(source: Any) -> str:
    """How the report names an item: its file, or the folder of a series of several files."""
    if not source.from_folder or not source.files:
        return str(source.root)
    return str(source.files[0] if len(source.files) == 1 else source.files[0].parent)


def _record(report: BatchReport, index: int, outcome: dict[str, Any] | BaseException,
            bar: _Progress) -> bool:
    """Put an attempt's ``outcome`` in item ``index``; True if it should be tried again."""
    item = report.items[index]
    item.attempts += 1
    if isinstance(outcome, BaseException):
        item.error = _reason(outcome)
        again = item.attempts < 2 and not isinstance(outcome, _NOT_RETRIED)
        if again:
            bar.restart(index)
        else:
            bar.failed(index, item)
        return again
    for key, value in outcome.items():
        setattr(item, key, value)
    item.status, item.error = "ok", None
    bar.done(index, item)
    return False


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror}"
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, SigstreamError) else f"{type(exc).__name__}: {text}"


def _run_inline(job: BatchJob, sources: Sequence[Any], locations: Sequence[Path],
                report: BatchReport, bar: _Progress) -> None:
    worker = _Worker(job)
    try:
        for i, (source, location) in enumerate(zip(sources, locations, strict=True)):
            while True:
                try:
                    outcome: dict[str, Any] | BaseException = worker.run(
                        source, location, functools.partial(bar.progress, i))
                except Exception as exc:  # one item's fault, reported; the others go on
                    outcome = exc
                if not _record(report, i, outcome, bar):
                    break
    finally:
        worker.denoiser.close()


def _run_pool(job: BatchJob, sources: Sequence[Any], locations: Sequence[Path],
              report: BatchReport, workers: int, bar: _Progress) -> None:
    context = multiprocessing.get_context("spawn")
    progress = context.Queue()  # (item, slices done, slices) from the workers
    pending = list(range(len(sources)))

    def drain() -> None:
        while not progress.empty():
            bar.progress(*progress.get())

    while pending:
        # A pool whose process died is broken for all its futures: the items still waiting
        # are tried again on a new pool (each attempt counted).
        with cf.ProcessPoolExecutor(
            max_workers=min(workers, len(pending)), mp_context=context,
            initializer=_start_process_worker, initargs=(job, progress),
        ) as pool:
            futures = {pool.submit(_run_in_process, i, sources[i], locations[i]): i
                       for i in pending}
            pending = []
            try:
                waiting = set(futures)
                while waiting:
                    done, waiting = cf.wait(waiting, timeout=0.25,
                                            return_when=cf.FIRST_COMPLETED)
                    drain()
                    for future in done:
                        i = futures[future]
                        try:
                            outcome: dict[str, Any] | BaseException = future.result()
                        except Exception as exc:
                            outcome = exc
                        if _record(report, i, outcome, bar):
                            pending.append(i)
            except KeyboardInterrupt:
                pool.shutdown(wait=False, cancel_futures=True)
                raise


def _run_ray(job: BatchJob, sources: Sequence[Any], locations: Sequence[Path],
             report: BatchReport, workers: int, address: str, bar: _Progress) -> None:
    try:
        import ray
    except ImportError as exc:
        raise VolumeError("--ray needs Ray: pip install 'sigstream[ray]'") from exc
    started = not ray.is_initialized()
    if started:
        local = address == "local"
        ray.init(address=None if local else address, num_cpus=workers if local else None,
                 include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    try:
        # A dead actor is restarted (its engine loaded again); its item is tried again here.
        actor: Any = ray.remote(num_cpus=1, max_restarts=1)(_Worker)
        idle: list[Any] = [actor.remote(job) for _ in range(min(workers, len(sources)))]
        queue = list(range(len(sources)))
        running: dict[Any, tuple[int, Any]] = {}
        while queue or running:
            while queue and idle:
                i, who = queue.pop(0), idle.pop()
                running[who.run.remote(sources[i], locations[i])] = (i, who)
            ready, _ = ray.wait(list(running), num_returns=1)
            i, who = running.pop(ready[0])
            idle.append(who)
            try:
                outcome: dict[str, Any] | BaseException = ray.get(ready[0])
            except ray.exceptions.RayTaskError as exc:  # the item's own fault
                outcome = exc.as_instanceof_cause()
            except ray.exceptions.RayError as exc:  # the actor died
                outcome = exc
            if _record(report, i, outcome, bar):
                queue.append(i)
    finally:
        if started:
            ray.shutdown()


class _Progress:
    """Bars on stderr: series done and slices done overall, and one bar per series being
    denoised (its slices; in this process and on a local pool — Ray actors report a series
    when it finishes); a failed item's line is printed above them."""

    def __init__(self, names: Sequence[str], *, enabled: bool) -> None:
        self.enabled = enabled
        self.names = [Path(name).name for name in names]
        self.counted: dict[int, int] = {}  # slices of each item already on the overall bar
        self.bars: dict[int, Any] = {}
        if enabled:
            from tqdm import tqdm

            self.tqdm = tqdm
            self.series = tqdm(total=len(names), desc="series", unit="series", position=0,
                               file=sys.stderr)
            self.slices = tqdm(desc="slices", unit="slice", position=1, file=sys.stderr)

    def progress(self, index: int, done: int, total: int) -> None:
        """Item ``index`` has ``done`` of its ``total`` slices denoised."""
        if not self.enabled:
            return
        bar = self.bars.get(index)
        if bar is None:
            # Redrawn at every report (a chunk of slices), however quick the series.
            bar = self.bars[index] = self.tqdm(
                total=total, desc=f"  {self.names[index]}", unit="slice", leave=False,
                position=2 + len(self.bars), mininterval=0, file=sys.stderr)
        bar.update(done - bar.n)
        self.slices.update(done - self.counted.get(index, 0))
        self.counted[index] = done

    def restart(self, index: int) -> None:
        """Item ``index`` is tried again: its slices come off the overall bar."""
        if self.enabled:
            self.slices.update(-self.counted.get(index, 0))
            self._end(index)

    def _end(self, index: int) -> None:
        bar = self.bars.pop(index, None)
        if bar is not None:
            bar.close()
        self.counted.pop(index, None)

    def done(self, index: int, item: ItemReport) -> None:
        if self.enabled:
            self.slices.update((item.slices or 0) - self.counted.get(index, 0))
            self._end(index)
            self.series.update()
            self.series.set_postfix_str(f"{Path(item.input).name}: {item.slices} slices, "
                                        f"{item.seconds} s")

    def failed(self, index: int, item: ItemReport) -> None:
        error = str(item.error)
        line = error if error.startswith(item.input) else f"{item.input}: {error}"
        if self.enabled:
            self._end(index)
            self.series.write(line, file=sys.stderr)
            self.series.update()
        else:
            print(line, file=sys.stderr)

    def close(self) -> None:
        if self.enabled:
            for index in list(self.bars):
                self._end(index)
            self.slices.close()
            self.series.close()
