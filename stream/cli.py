"""The ``sigstream`` command line.

The generic verbs live here (``run <path>`` for every served path, ``tap``, ``engines``,
``keys``, ``devices``, ``demo``); every path adds its own (its sources, ``train``/``eval``, its
tools) through :attr:`stream.paths.PathSpec.cli`, so this module names no path.

Security options (:mod:`stream.security`, ``docs/security.md``): ``--keys DIR`` turns CURVE on
for a command's external sockets: a server (``run <path>``, ``run codec-rx``) uses
``DIR/server.key_secret`` and accepts the client keys in ``DIR/allowed/``; a client (``source``,
``tap``, ``ecg ... --stream``, ``run codec-tx``) uses ``DIR/client.key_secret`` and trusts
``DIR/server.key``; ``--key NAME`` and ``--server-key NAME`` pick other files of ``DIR``.
Without keys a server refuses a non-loopback bind unless ``--insecure``.

The handlers are in :mod:`stream.cli_commands`; this module builds the parser, one function per
command group, and runs a command.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stream.cli_commands import (
    cmd_demo,
    cmd_devices,
    cmd_engines,
    cmd_keys,
    cmd_run,
    cmd_tap,
    cmd_view,
)
from stream.cli_options import (
    backend_option,
    environment,
    metrics_options,
    security_options,
)
from stream.errors import SigstreamError
from stream.logs import LOG_FORMATS, configure_logging
from stream.paths import CliGroups, PathSpec, path_specs
from stream.queues import QueuePolicy
from stream.service_config import ServiceConfig

__all__ = ["main"]


def _service_options() -> argparse.ArgumentParser:
    """The options of every ``run <path>`` service: its defaults are the service's own
    (:class:`ServiceConfig`), so the two cannot drift apart."""
    service = argparse.ArgumentParser(add_help=False)
    service.add_argument("--ingest", default=ServiceConfig.ingest, help="PULL endpoint to bind")
    service.add_argument("--publish", default=ServiceConfig.publish, help="PUB endpoint to bind")
    backend_option(service, default=ServiceConfig.backend)
    service.add_argument(
        "--shards", type=int, default=ServiceConfig.shards,
        help="per-stream stage processes (0: run them in the ingest process)",
    )
    service.add_argument(
        "--workers", type=int, default=ServiceConfig.workers, help="engine worker processes"
    )
    service.add_argument("--max-batch", type=int, default=ServiceConfig.max_batch)
    service.add_argument("--max-wait-us", type=int, default=ServiceConfig.max_wait_us)
    service.add_argument(
        "--queue-depth", type=int, default=ServiceConfig.queue_depth,
        help="messages waiting at the door (the bounded queue behind the ingest socket)",
    )
    service.add_argument(
        "--queue-mb", type=float, default=ServiceConfig.queue_bytes / 2**20,
        help="MiB waiting at the door (default %(default)g)",
    )
    service.add_argument(
        "--queue-policy", choices=[p.value for p in QueuePolicy],
        default=ServiceConfig.queue_policy,
        help="what a full door does: drop the oldest, reject the newest, or block the senders",
    )
    service.add_argument(
        "--deadline-ms", type=int, default=None,
        help="answer 'expired' what waited longer at the door (default: the path's own)",
    )
    service.add_argument(
        "--watchdog-s", type=float, default=ServiceConfig.watchdog_s,
        help="restart a stage that sends no sign of life for this long",
    )
    service.add_argument(
        "--batch-timeout-s", type=float, default=ServiceConfig.batch_timeout_s,
        help="restart an engine worker that spends this long in one batch",
    )
    service.add_argument(
        "--restart-budget", type=int, default=ServiceConfig.restart_budget,
        help="stage restarts allowed per minute before the service stops",
    )
    metrics_options(service, default_addr=ServiceConfig.metrics_addr)
    service.add_argument(
        "--mirror", default=None,
        help="endpoint (XPUB) where ingest sends accepted inputs again, to the subscribers of "
             "'<kind>/<stream>' (what `sigstream view` draws them from)",
    )
    service.add_argument(
        "--view-port", type=int, default=None,
        help="serve the live web view on this port of 127.0.0.1 (0: a free one); without "
             "--metrics-port the service's metrics go on a free port for it",
    )
    security_options(service, server=True)
    service.add_argument(
        "--weights", type=Path, default=None, help="weights file to serve instead of the shipped"
    )
    return service


def _run_command(run: Any, service: argparse.ArgumentParser, spec: PathSpec) -> None:
    """``run <path>``: the service serving ``spec``, with the path's own settings."""
    parser = run.add_parser(spec.name, parents=[service], help=f"the {spec.summary} service")
    parser.add_argument("--model", choices=spec.models, default=None,
                        help=f"model to serve (default {spec.default_model})")
    if spec.settings is not None:
        spec.settings.add_arguments(parser)
    parser.set_defaults(func=cmd_run)


def _tap_command(sub: Any) -> None:
    """``tap``."""
    tap = sub.add_parser("tap", help="print results as they arrive")
    tap.add_argument("--connect", default="tcp://127.0.0.1:5556")
    tap.add_argument("--topic", default="", help="topic prefix, e.g. result.spectral/inst-1")
    tap.add_argument("--count", type=int, default=None)
    tap.add_argument("--seconds", type=float, default=None)
    tap.add_argument("--json", action="store_true", help="one JSON object per line")
    security_options(tap, server=False)
    tap.set_defaults(func=cmd_tap)


def _view_command(sub: Any) -> None:
    """``view``."""
    view = sub.add_parser("view", help="a live web page of a service (and of codec link ends)")
    view.add_argument("--connect", default="tcp://127.0.0.1:5556", help="the results endpoint")
    view.add_argument("--mirror", default=None,
                      help="the service's input mirror (`run --mirror`): draw inputs too")
    view.add_argument("--metrics", default=None,
                      help="the service's metrics URL (http://HOST:PORT): health, queues and "
                           "its own per-stream counts, so the view reads only what it draws")
    view.add_argument("--meters", action="append", default=[],
                      help="metrics URL of a codec link end (repeat for each end)")
    view.add_argument("--port", type=int, default=8080, help="the page's port (0: a free one)")
    view.add_argument("--addr", default="127.0.0.1",
                      help="the page's address (default %(default)s; the page has no "
                           "authentication)")
    security_options(view, server=False)
    view.set_defaults(func=cmd_view)


def _engines_commands(sub: Any) -> None:
    """``engines build|list``."""
    engines = sub.add_parser("engines", help="compile engines ahead of time; show the cache")
    engines_sub = engines.add_subparsers(dest="action", required=True)
    build = engines_sub.add_parser("build", help="compile every engine (or one) into the cache")
    backend_option(build)
    build.add_argument("--precision", choices=("fp32", "fp16"), default="fp32")
    build.add_argument("--model", default="all",
                       help="'all' or an engine name (see `sigstream engines list`)")
    build.add_argument("--task-gate", action="store_true",
                       help="also require the task metric (peak F1, EER, accuracy, PESQ) to "
                            "match eager's")
    listing = engines_sub.add_parser("list", help="the cached engines")
    listing.add_argument("--json", action="store_true")
    engines.set_defaults(func=cmd_engines)


def _keys_commands(sub: Any) -> Any:
    """``keys generate`` (paths add their own keys); returns the ``keys`` sub-parsers."""
    keys = sub.add_parser("keys", help="make CURVE key pairs (and the paths' own keys)")
    keys_sub = keys.add_subparsers(dest="action", required=True)
    generate = keys_sub.add_parser("generate", help="a CURVE key pair: NAME.key, NAME.key_secret")
    generate.add_argument("--out", type=Path, required=True, help="the key folder (--keys)")
    generate.add_argument("--name", default="server",
                          help="server, client, or a device's name (default %(default)s)")
    generate.set_defaults(func=cmd_keys)
    return keys_sub


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sigstream", description="Real-time signal processing over ZeroMQ."
    )
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, and an error's traceback")
    parser.add_argument("--log-format", choices=LOG_FORMATS, default="text",
                        help="log lines as text, or as one JSON object each (for a log collector)")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a service or a link end until Ctrl-C / SIGTERM")
    source = sub.add_parser("source", help="push frames to a service")
    denoise = sub.add_parser("denoise", help="denoise volumes (DICOM series, NIfTI files)")
    train = sub.add_parser("train", help="train shipped weights (reproducible by seed)")
    evaluate = sub.add_parser("eval", help="regenerate an evaluation report")
    _tap_command(sub)
    _view_command(sub)
    _engines_commands(sub)
    groups = CliGroups(
        top=sub, run=run.add_subparsers(dest="path", required=True),
        source=source.add_subparsers(dest="source", required=True),
        denoise=denoise.add_subparsers(dest="path", required=True),
        train=train.add_subparsers(dest="task", required=True),
        eval=evaluate.add_subparsers(dest="task", required=True), keys=_keys_commands(sub),
    )
    service = _service_options()
    for spec in path_specs():
        if spec.serve is not None:
            _run_command(groups.run, service, spec)
        if spec.cli is not None:
            spec.cli(groups)

    devices = sub.add_parser("devices", help="list sound devices (for --device)")
    devices.set_defaults(func=cmd_devices)

    demo = sub.add_parser("demo", help="run the spectral service on local endpoints, a few s")
    demo.add_argument("--seconds", type=float, default=8.0)
    demo.add_argument("--view-port", type=int, default=8080,
                      help="the live web view's port (taken: a free one; -1: no view)")
    backend_option(demo)
    demo.set_defaults(func=cmd_demo)
    return parser


def _reason(exc: BaseException) -> str:
    """``exc`` as the user reads it: ``PATH: no such file`` for an OS error about a file."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``sigstream`` command and return its exit status.

    A refusal the user can act on (any :class:`~stream.errors.SigstreamError`, or an
    ``OSError`` such as a missing file) prints ``sigstream: <why>`` on stderr and returns 2;
    with ``-v`` its traceback comes first. Any other exception is a bug: it propagates.
    """
    args = _parser().parse_args(argv)
    configure_logging(logging.DEBUG if args.verbose else logging.INFO, args.log_format)
    try:
        return int(args.func(args, environment()) or 0)
    except (SigstreamError, OSError) as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"sigstream: {_reason(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
