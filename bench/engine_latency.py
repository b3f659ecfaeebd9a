"""Benchmark engine backends on every model the service runs; prints JSON.

For each model of every path (:attr:`stream.paths.PathSpec.engine_models`: the spectral ROI models,
the ECG models, the codec encoders and decoders; ``--models`` picks some) and backend (eager,
onnxruntime, and tensorrt at fp32 and fp16 where a CUDA GPU and torch-tensorrt are present):
latency p50/p99 at batch 1, p50 latency and throughput at each of ``--batches`` (8, 64), build time
(fresh cache, accuracy gate timed apart), cache-hit load time, and the ratios to eager, measured
side by side in one process: backends run in alternating blocks so that background load hits them
alike.
Models whose shipped weights are missing run with seeded random weights of the same
architecture (marked ``"weights": "random-init"``); timings do not depend on weight values.

Targets: on CPU the compiled backend is >= 2x faster than eager at batch 1 (p50) and never
slower at batch 64 (throughput ratio >= 1); on a GPU, TensorRT fp16 >= 3x eager fp32
throughput at batch 64 and <= 0.5 ms p50 at batch 1 for the ECG and ROI models.

``--with-inductor`` adds torch.compile (inductor, freezing) as a reference column; it is not an
engine backend (see :mod:`engines.engine` for why).

Usage: ``python bench/engine_latency.py [--models roi_unet,ecg_embedding] [--iters 300]
[--json out]``
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
TARGET_GPU_FP16_RATIO = 3.0
TARGET_GPU_B1_P50_MS = 0.5
DEFAULT_MODELS = ("roi_resnet_unet", "ecg_embedding", "codec_wideband_multiband_encoder",
                  "codec_wideband_multiband_decoder")
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


def _variants(requested: list[str]) -> list[tuple[str, str]]:
    """``(backend, precision)`` pairs to run: eager first (the reference); tensorrt at fp32 and
    fp16 only where it can run here."""
    from engines.engine import resolve_backend

    out = [("eager", "fp32")]
    for backend in requested:
        if backend == "eager":
            continue
        if backend == "tensorrt":
            if resolve_backend("auto")[0] != "tensorrt":
                logging.warning("tensorrt skipped: %s", resolve_backend("auto")[1])
                continue
            out += [("tensorrt", "fp32"), ("tensorrt", "fp16")]
        else:
            out.append((backend, "fp32"))
    return out


def bench_model(
    name: str,
    spec: ModelSpec,
    *,
    variants: list[tuple[str, str]],
    iters: int,
    batches: list[int],
    threads: int,
    tmp: Path,
    with_inductor: bool,
) -> dict[str, Any]:
    spec, weights = _prepare_spec(spec, tmp)
    max_batch = max(batches)
    result: dict[str, Any] = {
        "model": spec.name,
        "weights": weights,
        "parameters": int(sum(p.numel() for p in spec.build().parameters())),
        "backends": {},
    }
    rng = np.random.default_rng(0)
    x1 = rng.uniform(0, 1, (1, *spec.input_shape)).astype(np.float32)
    xs = {b: rng.uniform(0, 1, (b, *spec.input_shape)).astype(np.float32) for b in batches}
    engines: dict[str, Engine] = {}
    calls_1: dict[str, Callable[[], Any]] = {}
    calls_b: dict[int, dict[str, Callable[[], Any]]] = {b: {} for b in batches}
    try:
        for backend, precision in variants:
            label = backend if precision == "fp32" else f"{backend}-{precision}"
            cache = tmp / f"cache_{name}"
            t0 = time.perf_counter()
            engine = load_engine(spec, backend, max_batch=max_batch, cache_dir=cache,
                                 threads=threads, precision=precision, check=True)
            wall = time.perf_counter() - t0
            info = engine.info
            assert info is not None
            entry: dict[str, Any] = {
                "precision": precision,
                "build_s": round(info.build_s, 3),
                "gate_s": round(info.check_s, 3),
                "max_abs_error_vs_eager": info.max_abs_error,
                "first_load_wall_s": round(wall, 3),
            }
            if backend != "eager":
                t0 = time.perf_counter()
                again = load_engine(spec, backend, max_batch=max_batch, cache_dir=cache,
                                    threads=threads, precision=precision, check=False)
                entry["cache_hit_load_s"] = round(time.perf_counter() - t0, 4)
                assert again.info is not None and again.info.cache_hit
                again.close()
            else:
                entry["cache_hit_load_s"] = entry["build_s"]  # nothing to cache
            result["backends"][label] = entry
            engines[label] = engine
            calls_1[label] = _bind(engine, x1)
            for b in batches:
                calls_b[b][label] = _bind(engine, xs[b])
        if with_inductor:
            run1, build1 = _inductor_runner(spec, 1, threads)
            label = "inductor (reference, not an engine)"
            result["backends"][label] = {"build_s": round(build1, 3),
                                         "note": "compile per batch size"}
            calls_1[label] = lambda: run1(x1)
            for b in batches:
                runb, _ = _inductor_runner(spec, b, threads)
                calls_b[b][label] = lambda runb=runb, b=b: runb(xs[b])

        lat1 = _interleaved(calls_1, iters, warmup=20, block=_BLOCK_1)
        for label in calls_1:
            result["backends"][label]["batch1"] = _percentiles(lat1[label])
        for b in batches:
            latb = _interleaved(calls_b[b], max(20, iters * 8 // (10 * b)), warmup=3,
                                block=_BLOCK_B)
            for label in calls_b[b]:
                entry = result["backends"][label]
                entry[f"batch{b}"] = _percentiles(latb[label])
                entry[f"batch{b}_items_per_s"] = round(b * len(latb[label]) / sum(latb[label]), 1)
    finally:
        for engine in engines.values():
            engine.close()

    eager = result["backends"]["eager"]
    top = max(batches)
    ratios = {}
    for label, entry in result["backends"].items():
        if label == "eager":
            continue
        b1 = eager["batch1"]["p50_ms"] / entry["batch1"]["p50_ms"]
        bb = entry[f"batch{top}_items_per_s"] / eager[f"batch{top}_items_per_s"]
        row: dict[str, Any] = {"batch1_p50_speedup": round(b1, 3),
                               f"batch{top}_throughput_ratio": round(bb, 3)}
        if label.startswith("tensorrt"):
            row["meets_fp16_throughput_target"] = bool(
                label.endswith("fp16") and bb >= TARGET_GPU_FP16_RATIO)
            row["meets_batch1_p50_target"] = bool(
                entry["batch1"]["p50_ms"] <= TARGET_GPU_B1_P50_MS)
        else:
            row["meets_batch1_target"] = bool(b1 >= TARGET_B1_SPEEDUP)
            row["meets_batch_target"] = bool(bb >= TARGET_BATCH_RATIO)
        ratios[label] = row
    result["vs_eager"] = ratios
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS),
                        help="comma-separated engine names, or 'all'")
    parser.add_argument("--backends", default="eager,onnxruntime,tensorrt",
                        help="backends to compare (tensorrt runs only on a CUDA GPU)")
    parser.add_argument("--iters", type=int, default=300, help="timed batch-1 calls per backend")
    parser.add_argument("--batches", default="8,64",
                        help="batch sizes for throughput; the largest is the engines' bound")
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
    from stream.paths import path_specs

    models = {name: spec for path in path_specs() if path.engine_models is not None
              for name, (spec, _) in path.engine_models(64).items()}
    keys = list(models) if args.models == "all" else [
        k.strip() for k in args.models.split(",") if k.strip()]
    unknown = sorted(set(keys) - set(models))
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {sorted(models)}")
    batches = sorted({int(b) for b in args.batches.split(",")})
    variants = _variants([b.strip() for b in args.backends.split(",")])
    torch.set_num_threads(args.threads)
    report: dict[str, Any] = {
        "bench": "engines",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu": cpu_name(),
            "logical_cpus": os.cpu_count(),
            "load_average_1m_at_start": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
            "versions": library_versions("torch", "onnx", "onnxscript", "onnxruntime",
                                         "torch-tensorrt", "tensorrt"),
        },
        "config": {
            "models": keys,
            "iters": args.iters,
            "batches": [1, *batches],
            "backends": [f"{b}-{p}" for b, p in variants],
            "threads": args.threads,
            "interleaved_blocks": {"batch1": _BLOCK_1, "batch": _BLOCK_B},
        },
        "targets": {
            "cpu_batch1_p50_speedup_min": TARGET_B1_SPEEDUP,
            "cpu_batch_throughput_ratio_min": TARGET_BATCH_RATIO,
            "gpu_fp16_batch64_throughput_ratio_min": TARGET_GPU_FP16_RATIO,
            "gpu_batch1_p50_ms_max": TARGET_GPU_B1_P50_MS,
        },
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="sigstream-bench-") as tmp:
        for key in keys:
            report["models"][key] = bench_model(
                key,
                models[key],
                variants=variants,
                iters=args.iters,
                batches=batches,
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
