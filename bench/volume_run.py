"""A volume bench's run (:mod:`bench.ct`, :mod:`bench.pet`): its shared options and config, its
record (machine, the load after each phase) and its three serving parts from
:mod:`bench.volumes` in order."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from bench.harness import emit
from bench.machine import loaded_machine_notes, machine_info
from bench.volumes import VolumeBenchPath, batch_throughput, engine_throughput, live_slices

if TYPE_CHECKING:
    from engines.spec import ModelSpec

__all__ = [
    "BenchRun", "VolumeBenchConfig", "add_common_arguments", "bench_main", "common_config",
    "serving_parts",
]

_Config = TypeVar("_Config", bound="VolumeBenchConfig")


class BenchRun:
    """One bench run's record: ``result`` begins with the bench's name, the time, the machine
    (:func:`bench.machine.machine_info`) and ``config``; each :meth:`phase` notes the 1-minute
    load average after it; :meth:`finish` adds those and the loaded-machine notes."""

    def __init__(self, name: str, config: dict[str, Any]) -> None:
        self.machine = machine_info()
        self.loads: dict[str, float] = {}
        self.result: dict[str, Any] = {
            "bench": name,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": self.machine,
            "config": config,
        }

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        try:
            yield
        finally:
            self.loads[name] = round(os.getloadavg()[0], 2)

    def finish(self) -> dict[str, Any]:
        """The result, ready for JSON."""
        self.machine["load_avg_1m_after"] = self.loads
        self.machine["loaded_machine"] = loaded_machine_notes(self.machine, self.loads)
        return self.result


@dataclass(frozen=True, kw_only=True)
class VolumeBenchConfig:
    """What every volume bench run sets (the options of :func:`add_common_arguments`):
    ``model``, ``slices`` of the series, ``engine_rounds`` (alternating rounds of part 1, each
    4 batch-1 calls and one batch-8 call per backend), ``backend`` of parts 2 and 3, intra-op
    ``threads`` of every engine, ``ray`` (run the Ray part), ``live_rate_hz`` (slices/s of all
    live series together), ``live_seconds`` (how long they are sent), ``live_workers`` (the
    service's engine workers), ``drain_s`` (longest wait for answers after the last slice).
    Each bench adds its own fields and checks."""

    model: str
    slices: int
    engine_rounds: int = 6
    backend: str = "auto"
    threads: int = 1
    ray: bool = True
    live_series: int = 2
    live_rate_hz: float = 4.0
    live_seconds: float = 15.0
    live_workers: int = 2
    drain_s: float = 60.0

    def __post_init__(self) -> None:
        for name in ("engine_rounds", "threads", "live_series", "live_workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not (self.live_rate_hz > 0 and self.live_seconds > 0 and self.drain_s > 0):
            raise ValueError("live_rate_hz, live_seconds and drain_s must be > 0")


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every volume bench takes (engine rounds, backend, threads, the live part,
    Ray, the JSON file)."""
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


def common_config(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`VolumeBenchConfig` fields that :func:`add_common_arguments`'s options set,
    ``args.quick`` (each bench's own ``--quick``) choosing the short defaults: 2 engine rounds
    and 5 s of live slices instead of 6 and 15 s."""
    return {
        "engine_rounds": args.engine_rounds or (2 if args.quick else 6),
        "backend": args.backend, "threads": args.threads, "ray": not args.no_ray,
        "live_series": args.live_series, "live_rate_hz": args.live_rate,
        "live_seconds": args.live_seconds or (5.0 if args.quick else 15.0),
        "live_workers": args.live_workers,
    }


def serving_parts(run: BenchRun, config: VolumeBenchConfig, path: VolumeBenchPath,
                  spec: ModelSpec, *, engine_values: np.ndarray, batch_values: np.ndarray,
                  live_values: np.ndarray, live_weights: Path | None, tmp: Path,
                  per_backend: Sequence[str] = ()) -> None:
    """Parts 1-3 of a volume bench into ``run.result`` (``engines``, ``batch``, ``live``), each
    a :meth:`BenchRun.phase`: :func:`engine_throughput` on ``engine_values``,
    :func:`batch_throughput` on ``batch_values`` (``per_backend`` as there), then
    :func:`live_slices` of ``live_values`` served with ``live_weights``; all float32 ``(k, y,
    x)`` in the path's unit. ``tmp``: the run's folder; its ``engine-cache`` is shared by the
    parts, so that only part 1 builds."""
    cache_dir = tmp / "engine-cache"
    with run.phase("engines"):
        run.result["engines"] = engine_throughput(
            path, spec, engine_values, rounds=config.engine_rounds, threads=config.threads,
            cache_dir=cache_dir)
    with run.phase("batch"):
        run.result["batch"] = batch_throughput(
            path, spec, batch_values, backend=config.backend, threads=config.threads,
            ray=config.ray, description=f"bench.{path.name} {config.model}", tmp=tmp,
            cache_dir=cache_dir, per_backend=per_backend)
    with run.phase("live"):
        run.result["live"] = live_slices(
            path, live_values, live_weights, model=config.model, backend=config.backend,
            threads=config.threads, series=config.live_series, rate_hz=config.live_rate_hz,
            seconds=config.live_seconds, workers=config.live_workers, drain_s=config.drain_s,
            cache_dir=cache_dir)


def bench_main(parser: argparse.ArgumentParser, argv: list[str] | None,
               make_config: Callable[[argparse.Namespace], _Config],
               bench: Callable[[_Config], dict[str, Any]]) -> int:
    """A volume bench's command: parse ``argv``, make its config (a ``ValueError`` is a usage
    error), run ``bench`` (a :class:`~devices.errors.ConfigError`, e.g. an unreadable input,
    ends it with one line and status 2) and print its JSON (:func:`bench.harness.emit`)."""
    from devices.errors import ConfigError

    args = parser.parse_args(argv)
    try:
        config = make_config(args)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        result = bench(config)
    except ConfigError as exc:
        parser.exit(2, f"{parser.prog}: {exc}\n")
    emit(result, args.json)
    return 0
