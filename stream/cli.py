"""The ``sigstream`` command line.

Environment variables are read here and nowhere else: ``SIGSTREAM_CACHE`` (engine cache folder,
default ``~/.cache/sigstream/engines``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from stream.queues import QueuePolicy
from stream.service import BACKENDS, PATHS, ServiceConfig

__all__ = ["main"]

# The model keys of engines.roi.specs.ROI_SPECS, spelled out so `--help` does not load torch.
ROI_MODELS = ("cnn", "resnet", "unet", "resnet_unet")


def _cache_dir() -> Path:
    return Path(os.environ.get("SIGSTREAM_CACHE", Path.home() / ".cache" / "sigstream" / "engines"))


def _cmd_run(args: argparse.Namespace) -> int:
    from stream.service import serve

    config = ServiceConfig(
        path=args.path,
        ingest=args.ingest,
        publish=args.publish,
        backend=args.backend,
        model=args.model,
        shards=args.shards,
        workers=args.workers,
        max_batch=args.max_batch,
        max_wait_us=args.max_wait_us,
        queue_depth=args.queue_depth,
        queue_policy=args.queue_policy,
        metrics_port=args.metrics_port,
        cache_dir=_cache_dir(),
        weights=args.weights,
    )
    return serve(config)


def _cmd_source(args: argparse.Namespace) -> int:
    from stream.sources import run_replay, run_spectral_sim

    if args.source == "spectral-sim":
        return run_spectral_sim(
            connect=args.connect,
            rate_hz=args.rate,
            stream=args.stream,
            streams=args.streams,
            count=args.count,
            seconds=args.seconds,
            length=args.length,
            seed=args.seed,
        )
    return run_replay(
        Path(args.file),
        connect=args.connect,
        rate_hz=args.rate,
        stream=args.stream,
        count=args.count,
        loop=args.loop,
        skip_rows=args.skip_rows,
        seconds=args.seconds,
    )


def _cmd_tap(args: argparse.Namespace) -> int:
    from stream.tap import run_tap

    return run_tap(
        connect=args.connect, topic=args.topic, count=args.count, seconds=args.seconds,
        as_json=args.json,
    )


def _cmd_train(args: argparse.Namespace) -> int:
    from engines.roi.train import train_roi

    kwargs = {} if args.steps is None else {"steps": args.steps}
    train_roi(model=args.model, seed=args.seed, out_dir=args.out, **kwargs)
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from engines.roi.evaluate import evaluate_roi

    kwargs = {} if args.n_test is None else {"n_test": args.n_test}
    evaluate_roi(json_path=args.json, **kwargs)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from stream.demo import run_demo

    return run_demo(seconds=args.seconds, backend=args.backend, cache_dir=_cache_dir())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sigstream", description="Real-time signal processing over ZeroMQ."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a service until Ctrl-C / SIGTERM")
    run.add_argument("path", choices=PATHS)
    # Defaults are the service's own (ServiceConfig), so the two cannot drift apart.
    run.add_argument("--ingest", default=ServiceConfig.ingest, help="PULL endpoint to bind")
    run.add_argument("--publish", default=ServiceConfig.publish, help="PUB endpoint to bind")
    run.add_argument("--backend", choices=BACKENDS, default=ServiceConfig.backend)
    run.add_argument("--model", choices=ROI_MODELS, default=ServiceConfig.model)
    run.add_argument(
        "--shards", type=int, default=ServiceConfig.shards,
        help="per-stream stage processes (0: run them in the ingest process)",
    )
    run.add_argument(
        "--workers", type=int, default=ServiceConfig.workers, help="engine worker processes"
    )
    run.add_argument("--max-batch", type=int, default=ServiceConfig.max_batch)
    run.add_argument("--max-wait-us", type=int, default=ServiceConfig.max_wait_us)
    run.add_argument(
        "--queue-depth", type=int, default=ServiceConfig.queue_depth,
        help="bound of each worker queue",
    )
    run.add_argument(
        "--queue-policy", choices=[p.value for p in QueuePolicy],
        default=ServiceConfig.queue_policy,
    )
    run.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus /metrics")
    run.add_argument(
        "--weights", type=Path, default=None, help="weights file to serve instead of the shipped"
    )
    run.set_defaults(func=_cmd_run)

    source = sub.add_parser("source", help="push frames to a service")
    source_sub = source.add_subparsers(dest="source", required=True)
    sim = source_sub.add_parser("spectral-sim", help="spectrometer simulator (PAPERS.md §1)")
    sim.add_argument("--connect", required=True)
    sim.add_argument("--rate", type=float, default=100.0, help="spectra per second per stream")
    sim.add_argument("--stream", default="sim-1", help="stream id (prefix when --streams > 1)")
    sim.add_argument("--streams", type=int, default=1, help="simulated instruments")
    sim.add_argument("--count", type=int, default=None, help="stop after N spectra per stream")
    sim.add_argument("--seconds", type=float, default=None, help="stop after S seconds")
    sim.add_argument("--length", type=int, default=512, help="samples per spectrum")
    sim.add_argument("--seed", type=int, default=0)
    replay = source_sub.add_parser("replay", help="replay a CSV / NPY file, one spectrum per row")
    replay.add_argument("file")
    replay.add_argument("--connect", required=True)
    replay.add_argument("--rate", type=float, default=10.0, help="spectra per second")
    replay.add_argument("--stream", default=None, help="stream id (default: the file's name)")
    replay.add_argument("--count", type=int, default=None)
    replay.add_argument("--loop", action="store_true", help="start again at the end")
    replay.add_argument("--seconds", type=float, default=None, help="stop after S seconds")
    replay.add_argument(
        "--skip-rows", type=int, default=0,
        help="CSV rows to skip first (a numeric header, e.g. a wavenumber axis)",
    )
    source.set_defaults(func=_cmd_source)

    tap = sub.add_parser("tap", help="print results as they arrive")
    tap.add_argument("--connect", default="tcp://127.0.0.1:5556")
    tap.add_argument("--topic", default="", help="topic prefix, e.g. result.spectral/inst-1")
    tap.add_argument("--count", type=int, default=None)
    tap.add_argument("--seconds", type=float, default=None)
    tap.add_argument("--json", action="store_true", help="one JSON object per line")
    tap.set_defaults(func=_cmd_tap)

    train = sub.add_parser("train", help="train shipped weights (reproducible by seed)")
    train.add_argument("task", choices=("roi",))
    train.add_argument("--model", choices=ROI_MODELS, required=True)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--steps", type=int, default=None, help="optimiser steps (default: shipped)")
    train.add_argument("--out", type=Path, default=None, help="folder (default: shipped weights)")
    train.set_defaults(func=_cmd_train)

    evaluate = sub.add_parser("eval", help="regenerate the evaluation report")
    evaluate.add_argument("task", choices=("roi",))
    evaluate.add_argument("--json", type=Path, default=None, help="write the report here")
    evaluate.add_argument("--n-test", type=int, default=None, help="test spectra (default 30000)")
    evaluate.set_defaults(func=_cmd_eval)

    demo = sub.add_parser("demo", help="run the spectral service on local endpoints, a few s")
    demo.add_argument("--seconds", type=float, default=8.0)
    demo.add_argument("--backend", choices=BACKENDS, default="auto")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(processName)s %(name)s %(levelname)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
