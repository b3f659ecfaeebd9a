"""End-to-end pipeline benchmark: simulated instruments -> service -> subscriber, through real
sockets and processes, side by side with a naive one-process pipeline. Prints JSON.

    python -m bench.pipeline --streams 10 --rate 100 --seconds 30 --json runs/pipeline.json
    python -m bench.pipeline --skip-naive --compare-model resnet_unet   # today's read-out beside

For each pipeline (the :class:`~stream.service.Service`, then :mod:`bench.naive_pipeline`):

- a **source** process plays ``--streams`` instruments at ``--rate`` spectra/s each (512-sample
  spectra from :func:`devices.spectra_sim.simulate`), on a fixed schedule; each message's
  ``t_ns`` is the time it is sent (its capture time), and how late the source ran against its
  schedule is reported as ``source_max_lag_ms``. Its PUSH socket queues without bound (the
  source never blocks), so a pipeline that falls behind shows it as latency.
- a **subscriber** (this process) receives every result and error and measures
  capture-to-result latency (p50/p99/max, ms) and accounts for every ``seq`` sent: delivered,
  error (by code), dropped with a reason (``dropped``/``overloaded``), or unexplained (never
  answered within ``--drain`` seconds after the source ended; for the naive pipeline, which has
  no drop policy, that is the backlog it had not worked off yet).

The service's own accounting (its per-stream summary) is reported next to the subscriber's, with
the CPU time each stage process used per message (Linux ``/proc``) and the engine's own rate.
Defaults are the 2-core target: two engine workers of one intra-op thread each, the service's
own door (1,024 messages, ``drop-oldest``, the spectral deadline), batches of up to 32 rows or
2 ms.
Ratios are naive / service for latencies and service / naive for delivered. With
``--compare-model`` the service is run again with that model in the same run (same machine,
same load), and the CPU cost per spectrum of each model's read-out is measured in-process
(``readout_cost_ms_per_spectrum``; a peak-head model with and without its joint fit). Finally
``scipy.signal.find_peaks_cwt`` throughput on the same 512-sample spectra (one core), the
classical method the ROI model replaces.

If the shipped weights are missing, an untrained model of the same architecture is used
(latency and throughput do not depend on the weights) and the JSON says so.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np

if not __package__:  # run as a file
    import _script

    _script.rerun_as_module()

from bench.harness import (
    PacedLoad,
    add_service_options,
    cpu_seconds,
    emit,
    engine_totals,
    load_process,
    roi_weights,
    service_accounting,
    spectral_run,
)
from stream.paths.spectral.commands import PEAK_FITS
from stream.results import ResultsClient
from stream.stages import DROP_CODES

_weights = roi_weights  # the name soak, overload and faults import from here
_POOL = 256  # distinct simulated spectra, cycled


# ---------------------------------------------------------------------------------------------
# Source process


def source_main(
    *, endpoint: str, streams: int, rate_hz: float, seconds: float, seed: int, start_ns: int,
    report: Any,
) -> None:
    """Send ``rate_hz * seconds`` spectra per stream on a fixed schedule from ``start_ns``
    (Unix ns), then send ``{"sent", "max_lag_ms", "elapsed_s"}`` on ``report`` (a pipe end)."""
    from devices.spectra_sim import SpectrumSimConfig, simulate
    from stream.wire import data_message, encode

    pool = simulate(_POOL, config=SpectrumSimConfig(), rng=np.random.default_rng(seed)).spectra
    ids = [f"inst-{i}" for i in range(streams)]
    with PacedLoad(endpoint=endpoint, ids=ids, rate_hz=rate_hz, seconds=seconds,
                   start_ns=start_ns, report=report) as load:
        for k, i, now in load.schedule:
            spectrum = pool[(k * streams + i) % _POOL]
            # Captured now: a source starved of CPU must not be billed to the pipeline.
            load.push.send_multipart(encode(data_message("spectrum", ids[i], k, spectrum,
                                                         t_ns=now)))


# ---------------------------------------------------------------------------------------------
# Subscriber (this process)


def _collect(results: ResultsClient, source: Any, report: Any, drain_s: float
             ) -> dict[str, Any]:
    """Receive until the source reported and every seq is answered, or ``drain_s`` after the
    source ended. Returns the raw tallies."""
    from stream.wire import ERROR_KIND

    answers: dict[str, dict[int, str]] = {}
    latencies: list[float] = []
    duplicates = 0
    sent: dict[str, int] | None = None
    src: dict[str, Any] = {}
    deadline: float | None = None
    first_ns = last_ns = None
    while True:
        if sent is None and report.poll():
            src = report.recv()
            sent = src["sent"]
            deadline = time.monotonic() + drain_s
        if sent is not None:
            done = all(len(answers.get(s, {})) >= n for s, n in sent.items())
            if done or time.monotonic() > (deadline or 0):
                break
        if sent is None and not source.is_alive() and not report.poll():
            raise RuntimeError(f"the source process died (exit code {source.exitcode})")
        for msg, now in results.receive(0.1):
            stream, seq = msg.header.get("stream"), msg.header.get("seq")
            if seq is None:
                continue  # an error about an unreadable message: not one of ours
            if msg.kind == ERROR_KIND:
                code = str(msg.payload.get("code"))
                outcome = f"dropped:{code}" if code in DROP_CODES else f"error:{code}"
            else:
                outcome = "delivered"
                latencies.append((now - int(msg.header["t_ns"])) / 1e6)
                first_ns = first_ns or now
                last_ns = now
            per = answers.setdefault(str(stream), {})
            if int(seq) in per:
                duplicates += 1
            per[int(seq)] = outcome
    assert sent is not None
    outcomes: dict[str, int] = {}
    for per in answers.values():
        for outcome in per.values():
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    total_sent = sum(sent.values())
    answered = sum(min(len(answers.get(s, {})), n) for s, n in sent.items())
    lat = np.asarray(latencies) if latencies else np.zeros(1)
    span_s = (last_ns - first_ns) / 1e9 if first_ns and last_ns and last_ns > first_ns else 0.0
    return {
        "sent": total_sent,
        "delivered": outcomes.get("delivered", 0),
        "errors": {k[6:]: v for k, v in outcomes.items() if k.startswith("error:")},
        "dropped": {k[8:]: v for k, v in outcomes.items() if k.startswith("dropped:")},
        "unexplained": total_sent - answered,
        "duplicates": duplicates,
        "latency_ms": {
            "p50": round(float(np.percentile(lat, 50)), 3),
            "p99": round(float(np.percentile(lat, 99)), 3),
            "max": round(float(lat.max()), 3),
            "mean": round(float(lat.mean()), 3),
        },
        "results_per_s": round(outcomes.get("delivered", 0) / span_s, 1) if span_s else None,
        "source_max_lag_ms": round(src.get("max_lag_ms", 0.0), 3),
    }


def _run_load(
    publish: str, ingest: str, args: argparse.Namespace, mp: Any, seed: int
) -> dict[str, Any]:
    # lossless: the measuring end must not lose anything itself
    with ResultsClient(publish, lossless=True, settle_s=0.5) as results, load_process(
        mp, source_main, name="bench-source", endpoint=ingest, streams=args.streams,
        rate_hz=args.rate, seconds=args.seconds, seed=seed,
        start_ns=time.time_ns() + 500_000_000,
    ) as (source, report):
        return _collect(results, source, report, drain_s=args.drain)


# ---------------------------------------------------------------------------------------------
# The two pipelines


def run_service(args: argparse.Namespace, weights: Path | None, mp: Any, *,
                attach: Callable[[Any], AbstractContextManager[dict[str, Any]]] | None = None,
                mirror: bool = False, metrics: bool = False) -> dict[str, Any]:
    """The service under the load; ``attach(service)``, when given, is entered once the
    service is up and left when the load is done (a client beside the measuring one, e.g. a
    view: bench/view.py); what it yields is added to the result as ``attached``. ``mirror``:
    the service mirrors its inputs (``ServiceConfig.mirror``); ``metrics``: it serves
    ``/metrics`` and health on a free port."""
    from stream.paths.spectral.commands import SpectralSettings
    from stream.service import Service, ServiceConfig

    config = ServiceConfig(
        path="spectral", settings=SpectralSettings(peak_fit=args.peak_fit),
        ingest="tcp://127.0.0.1:*", publish="tcp://127.0.0.1:*",
        backend=args.backend, model=args.model, weights=weights, shards=args.shards,
        workers=args.workers, max_batch=args.max_batch, max_wait_us=args.max_wait_us,
        queue_depth=args.queue_depth, queue_policy=args.queue_policy, threads=args.threads,
        cache_dir=Path(args.cache_dir) if args.cache_dir else None,
        mirror="tcp://127.0.0.1:*" if mirror else None, metrics_port=0 if metrics else None,
    )
    t0 = time.perf_counter()
    with Service(config) as service:
        start_s = time.perf_counter() - t0
        backend = {n: r["backend"] for n, r in service.stages.items() if "backend" in r}
        pids = service.pids
        with attach(service) if attach else contextlib.nullcontext({}) as attached:
            cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
            out = _run_load(service.bound_publish, service.bound_ingest, args, mp, seed=1)
            cpu = {name: cpu_seconds(pid) - cpu0[name] for name, pid in pids.items()}
        if attach:
            out["attached"] = attached
        service.stop()
        summary = service.summary()
        stats = service.stats()
    batches, rows, engine_s = engine_totals(stats)
    out["service_accounting"] = service_accounting(summary)
    out["engine"] = {
        "backend": sorted(set(backend.values())),
        "batches": batches,
        "rows_per_batch_mean": round(rows / batches, 2) if batches else None,
        "engine_ms_per_row": round(1e3 * engine_s / rows, 3) if rows else None,
        "engine_rows_per_s": round(rows / engine_s, 1) if engine_s else None,
    }
    out["start_s"] = round(start_s, 2)
    received = max(1, out["service_accounting"]["received"])
    out["cpu_ms_per_message"] = {name: round(1e3 * c / received, 3) for name, c in cpu.items()}
    out["cpu_ms_per_message"]["total"] = round(1e3 * sum(cpu.values()) / received, 3)
    return out


def run_naive(args: argparse.Namespace, weights: Path | None, mp: Any) -> dict[str, Any]:
    from bench.naive_pipeline import naive_main

    control, child_end = mp.Pipe()
    proc = mp.Process(
        target=naive_main, name="bench-naive",
        kwargs={"ingest": "tcp://127.0.0.1:*", "publish": "tcp://127.0.0.1:*",
                "model": args.model, "weights": None if weights is None else str(weights),
                "threads": args.threads or 1, "control": child_end},
    )
    proc.start()
    child_end.close()
    try:
        if not control.poll(300):
            raise RuntimeError("naive pipeline not ready after 300 s")
        info = control.recv()
        if "error" in info:
            raise RuntimeError(f"naive pipeline failed to start: {info['error']}")
        return _run_load(info["publish"], info["ingest"], args, mp, seed=1)
    finally:
        control.send("stop")
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join()


def cwt_throughput(n: int = 100, seed: int = 2) -> dict[str, Any]:
    """``scipy.signal.find_peaks_cwt`` on 512-sample simulated spectra, widths 1..31 samples
    (the simulator's peak supports are 5..31)."""
    from scipy.signal import find_peaks_cwt

    from devices.spectra_sim import SpectrumSimConfig, simulate

    spectra = simulate(n, config=SpectrumSimConfig(), rng=np.random.default_rng(seed)).spectra
    widths = np.arange(1, 32)
    find_peaks_cwt(spectra[0], widths)
    t0 = time.perf_counter()
    for x in spectra:
        find_peaks_cwt(x, widths)
    dt = time.perf_counter() - t0
    return {"spectra_per_s": round(n / dt, 1), "ms_per_spectrum": round(1e3 * dt / n, 3),
            "widths": "1..31", "spectra": n}


def readout_cost(models: list[str], n: int = 300, seed: int = 3) -> dict[str, Any]:
    """CPU ms per 512-sample spectrum of each model's read-out (the detector's ``finish``,
    after the engine), one spectrum at a time as a worker finishes them; for a peak-head model
    also without its joint fit. Untrained weights where the shipped ones are missing."""
    import dataclasses

    import torch

    from devices.spectra_sim import SpectrumSimConfig, simulate
    from engines.roi.detector import RoiDetector
    from engines.roi.specs import ROI_SPECS, detector_config

    spectra = simulate(n, config=SpectrumSimConfig(), rng=np.random.default_rng(seed)).spectra
    out: dict[str, Any] = {}
    for model in models:
        spec = ROI_SPECS[model]
        net = spec.load() if spec.weights_path.is_file() else spec.build().eval()
        cfg = detector_config(model)
        variants = {"readout": cfg}
        if spec.extra.get("output") == "peak_heads":
            variants["heads_only"] = dataclasses.replace(cfg, peak_fit=None)
        detector = RoiDetector(cfg)  # windowing does not depend on the read-out settings
        prepared = [detector.prepare(x) for x in spectra]
        with torch.inference_mode():
            outputs = [net(torch.from_numpy(w)).numpy() for w, _ in prepared]
        costs = {}
        for label, c in variants.items():
            det = RoiDetector(c)
            t0 = time.process_time()
            for x, (_, plan), z in zip(spectra, prepared, outputs, strict=True):
                det.finish(x, z, plan)
            costs[f"{label}_cpu_ms"] = round(1e3 * (time.process_time() - t0) / n, 3)
        out[model] = costs
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--rate", type=float, default=100.0, help="spectra/s per stream")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--drain", type=float, default=10.0,
                        help="s to wait for answers after the source ends")
    parser.add_argument("--model", default="peaks_mixed")
    parser.add_argument("--weights", default=None)
    add_service_options(
        parser, workers=2, workers_help="engine workers (2: one per core of the 2-core target)",
    )
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per worker")
    parser.add_argument("--queue-policy", default="drop-oldest")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--peak-fit", default="model", choices=PEAK_FITS,
                        help="how a peak model's peaks are measured (sigstream run spectral)")
    parser.add_argument("--compare-model", default=None,
                        help="also run the service with this model, side by side in this run")
    args = parser.parse_args(argv)

    with spectral_run(args, prefix="bench-pipeline-") as run:
        result = run.result
        result["config"] = {
            "streams": args.streams, "rate_hz": args.rate, "seconds": args.seconds,
            "offered_per_s": args.streams * args.rate, "model": args.model,
            "weights": run.weights_note, "peak_fit": args.peak_fit, "backend": args.backend,
            "shards": args.shards,
            "workers": args.workers, "threads": args.threads, "max_batch": args.max_batch,
            "max_wait_us": args.max_wait_us, "queue_depth": args.queue_depth,
            "queue_policy": args.queue_policy, **run.machine_at_start(),
        }
        result["service"] = run_service(args, run.weights, run.mp)
        if args.compare_model:
            other = argparse.Namespace(**{**vars(args), "model": args.compare_model,
                                          "weights": None})
            weights, note = roi_weights(other, run.tmp)
            result["compare"] = {"model": args.compare_model, "weights": note,
                                 "service": run_service(other, weights, run.mp)}
        result["readout_cost_ms_per_spectrum"] = readout_cost(
            [args.model] + ([args.compare_model] if args.compare_model else []))
        if not args.skip_naive:
            result["naive"] = run_naive(args, run.weights, run.mp)
            s, n = result["service"], result["naive"]
            result["ratios_naive_over_service"] = {
                key: _ratio(n["latency_ms"][key], s["latency_ms"][key])
                for key in ("p50", "p99", "max")
            }
            result["ratios_naive_over_service"]["delivered_service_over_naive"] = _ratio(
                s["delivered"], n["delivered"]
            )
        result["find_peaks_cwt"] = cwt_throughput()
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
