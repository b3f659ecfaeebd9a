"""Benchmark engine backends on the ROI models; prints JSON.

For each ROI model (``engines.roi.specs.ROI_SPECS``) and backend (eager, onnxruntime): latency
p50/p99 at batch 1, p50 latency and throughput at ``--batch`` (64), build time (fresh cache,
accuracy gate timed apart), cache-hit load time, and the compiled/eager ratios, measured side by
side in one process: backends run in alternating blocks so that background load hits them
alike. Models whose shipped weights are missing run with seeded random weights of the same
architecture (marked ``"weights": "random-init"``); timings do not depend on weight values.

Targets (from the issue): the compiled backend is >= 2x faster than eager at batch 1 (p50) and
never slower at batch 64 (throughput ratio >= 1).

``--with-inductor`` adds torch.compile (inductor, freezing) as a reference column; it is not an
engine backend (see :mod:`engines.engine` for why).

Usage: ``python bench/engine_latency.py [--models unet,cnn] [--iters 300] [--json out]``
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engines.cache import cpu_name, library_versions
from engines.engine import Engine, load_engine
from engines.spec import ModelSpec

TARGET_B1_SPEEDUP = 2.0
TARGET_BATCH_RATIO = 1.0
BACKENDS = ("eager", "onnxruntime")
_BLOCK_1 = 10  # batch-1 calls per alternating block
_BLOCK_B = 2  # large-batch calls per alternating block


def _percentiles(samples_s: list[float]) -> dict[str, float]:
    ms = np.asarray(samples_s) * 1e3
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 4),
        "p99_ms": round(float(np.percentile(ms, 99)), 4),
        "mean_ms": round(float(ms.mean()), 4),
        "n": int(ms.size),
    }


def _interleaved(
    runners: dict[str, Callable[[], Any]], iters: int, warmup: int, block: int
) -> dict[str, list[float]]:
    """Time each runner ``iters`` times, in alternating blocks of ``block`` calls."""
    for run in runners.values():
        for _ in range(warmup):
            run()
    samples: dict[str, list[float]] = {name: [] for name in runners}
    while any(len(s) < iters for s in samples.values()):
        for name, run in runners.items():
            todo = min(block, iters - len(samples[name]))
            for _ in range(todo):
                t0 = time.perf_counter()
                run()
                samples[name].append(time.perf_counter() - t0)
    return samples


def _bind(engine: Engine, x: np.ndarray) -> Callable[[], np.ndarray]:
    def run() -> np.ndarray:
        return engine(x)

    return run


def _prepare_spec(spec: ModelSpec, tmp: Path) -> tuple[ModelSpec, str]:
    """The spec itself if its weights exist, else a copy with seeded random weights."""
    if spec.weights_path.exists():
        return spec, f"trained ({spec.weights}, sha256 {spec.weights_sha256()[:12]})"
    torch.manual_seed(0)
    module = spec.build()
    path = tmp / f"random_{spec.weights}"
    torch.save(module.state_dict(), path)
    return dataclasses.replace(spec, weights=str(path)), "random-init"


def _inductor_runner(spec: ModelSpec, batch: int, threads: int) -> tuple[Callable, float]:
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    module = spec.load()
    compiled = torch.compile(module, dynamic=False)
    x = torch.from_numpy(np.zeros((batch, *spec.input_shape), np.float32))
    t0 = time.perf_counter()
    with torch.inference_mode():
        compiled(x)
    build_s = time.perf_counter() - t0

    def run(arr: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return compiled(torch.from_numpy(arr)).numpy()

    return run, build_s


def bench_model(
    key: str,
    spec: ModelSpec,
    *,
    iters: int,
    batch: int,
    threads: int,
    tmp: Path,
    with_inductor: bool,
) -> dict[str, Any]:
    spec, weights = _prepare_spec(spec, tmp)
    result: dict[str, Any] = {
        "model": spec.name,
        "weights": weights,
        "parameters": int(sum(p.numel() for p in spec.build().parameters())),
        "backends": {},
    }
    rng = np.random.default_rng(0)
    x1 = rng.uniform(0, 1, (1, *spec.input_shape)).astype(np.float32)
    xb = rng.uniform(0, 1, (batch, *spec.input_shape)).astype(np.float32)
    engines: dict[str, Engine] = {}
    calls_1: dict[str, Callable[[], Any]] = {}
    calls_b: dict[str, Callable[[], Any]] = {}
    try:
        for backend in BACKENDS:
            cache = tmp / f"cache_{key}"
            t0 = time.perf_counter()
            engine = load_engine(
                spec, backend, max_batch=batch, cache_dir=cache, threads=threads, check=True
            )
            wall = time.perf_counter() - t0
            info = engine.info
            assert info is not None
            entry: dict[str, Any] = {
                "build_s": round(info.build_s, 3),
                "gate_s": round(info.check_s, 3),
                "max_abs_error_vs_eager": info.max_abs_error,
                "first_load_wall_s": round(wall, 3),
            }
            if backend != "eager":
                t0 = time.perf_counter()
                again = load_engine(
                    spec, backend, max_batch=batch, cache_dir=cache, threads=threads, check=False
                )
                entry["cache_hit_load_s"] = round(time.perf_counter() - t0, 4)
                assert again.info is not None and again.info.cache_hit
                again.close()
            else:
                entry["cache_hit_load_s"] = entry["build_s"]  # nothing to cache
            result["backends"][backend] = entry
            engines[backend] = engine
            calls_1[backend] = _bind(engine, x1)
            calls_b[backend] = _bind(engine, xb)
        if with_inductor:
            run1, build1 = _inductor_runner(spec, 1, threads)
            runb, buildb = _inductor_runner(spec, batch, threads)
            result["backends"]["inductor (reference, not an engine)"] = {
                "build_s": round(build1 + buildb, 3),
                "note": "compile per batch size",
            }
            calls_1["inductor (reference, not an engine)"] = lambda: run1(x1)
            calls_b["inductor (reference, not an engine)"] = lambda: runb(xb)

        lat1 = _interleaved(calls_1, iters, warmup=20, block=_BLOCK_1)
        iters_b = max(20, iters // 10)
        latb = _interleaved(calls_b, iters_b, warmup=3, block=_BLOCK_B)
        for name in calls_1:
            entry = result["backends"][name]
            entry["batch1"] = _percentiles(lat1[name])
            entry[f"batch{batch}"] = _percentiles(latb[name])
            entry[f"batch{batch}_items_per_s"] = round(batch * len(latb[name]) / sum(latb[name]), 1)
    finally:
        for engine in engines.values():
            engine.close()

    eager = result["backends"]["eager"]
    ratios = {}
    for name, entry in result["backends"].items():
        if name == "eager":
            continue
        b1 = eager["batch1"]["p50_ms"] / entry["batch1"]["p50_ms"]
        bb = entry[f"batch{batch}_items_per_s"] / eager[f"batch{batch}_items_per_s"]
        ratios[name] = {
            "batch1_p50_speedup": round(b1, 3),
            f"batch{batch}_throughput_ratio": round(bb, 3),
            "meets_batch1_target": bool(b1 >= TARGET_B1_SPEEDUP),
            "meets_batch_target": bool(bb >= TARGET_BATCH_RATIO),
        }
    result["vs_eager"] = ratios
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models", default="cnn,resnet,unet,resnet_unet", help="comma-separated ROI model keys"
    )
    parser.add_argument("--iters", type=int, default=300, help="timed batch-1 calls per backend")
    parser.add_argument("--batch", type=int, default=64, help="throughput batch size")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per engine")
    parser.add_argument(
        "--with-inductor",
        action="store_true",
        help="add torch.compile (inductor) as a reference column",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)
    from engines.roi.specs import ROI_SPECS

    keys = [k.strip() for k in args.models.split(",") if k.strip()]
    unknown = sorted(set(keys) - set(ROI_SPECS))
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {sorted(ROI_SPECS)}")
    torch.set_num_threads(args.threads)
    report: dict[str, Any] = {
        "bench": "engines",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu": cpu_name(),
            "logical_cpus": os.cpu_count(),
            "load_average_1m_at_start": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
            "versions": library_versions("torch", "onnx", "onnxscript", "onnxruntime"),
        },
        "config": {
            "models": keys,
            "iters": args.iters,
            "batch": args.batch,
            "threads": args.threads,
            "interleaved_blocks": {"batch1": _BLOCK_1, "batch": _BLOCK_B},
        },
        "targets": {
            "batch1_p50_speedup_min": TARGET_B1_SPEEDUP,
            f"batch{args.batch}_throughput_ratio_min": TARGET_BATCH_RATIO,
        },
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="sigstream-bench-") as tmp:
        for key in keys:
            report["models"][key] = bench_model(
                key,
                ROI_SPECS[key],
                iters=args.iters,
                batch=args.batch,
                threads=args.threads,
                tmp=Path(tmp),
                with_inductor=args.with_inductor,
            )
    report["machine"]["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
