"""The ``sigstream`` command line.

Security options (:mod:`stream.security`, ``docs/security.md``): ``--keys DIR`` turns CURVE on
for a command's external sockets: a server (``run spectral|ecg``, ``run codec-rx``) uses
``DIR/server.key_secret`` and accepts the client keys in ``DIR/allowed/``; a client (``source``,
``tap``, ``ecg ... --stream``, ``run codec-tx``) uses ``DIR/client.key_secret`` and trusts
``DIR/server.key``; ``--key NAME`` and ``--server-key NAME`` pick other files of ``DIR``.
Without keys a server refuses a non-loopback bind unless ``--insecure``.

The handlers, and the environment variables they read, are in :mod:`stream.cli_commands`;
this module builds the parser, one function per command group, and runs a command.
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
    CODEC_CONFIGS,
    CODEC_LOSSES,
    CODEC_MODELS,
    ECG_MODELS,
    ROI_MODELS,
    cmd_codec,
    cmd_codec_rx,
    cmd_codec_tx,
    cmd_demo,
    cmd_devices,
    cmd_ecg,
    cmd_engines,
    cmd_eval,
    cmd_keys,
    cmd_run,
    cmd_source,
    cmd_tap,
    cmd_train,
)
from stream.errors import SigstreamError
from stream.queues import QueuePolicy
from stream.service_config import BACKENDS, PATHS, ServiceConfig
from stream.sources import DEFAULT_BUFFER_BYTES

__all__ = ["main"]


def _security_options(parser: argparse.ArgumentParser, *, server: bool) -> None:
    """``--keys``/``--key`` and, for a server, ``--insecure``; for a client, ``--server-key``."""
    parser.add_argument("--keys", type=Path, default=None,
                        help="folder of CURVE keys (`sigstream keys generate`): encrypt and "
                             "authenticate this command's sockets")
    parser.add_argument("--key", default="server" if server else "client",
                        help="this end's key pair in --keys: NAME.key_secret (default "
                             "%(default)s)")
    if server:
        parser.add_argument("--insecure", action="store_true",
                            help="allow a non-loopback bind without --keys (anyone who can "
                                 "reach it can send and read)")
    else:
        parser.add_argument("--server-key", default="server",
                            help="the server's public key in --keys: NAME.key (default "
                                 "%(default)s)")


def _metrics_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics-port", type=int, default=None,
                        help="serve Prometheus /metrics and health on this port")
    parser.add_argument("--metrics-addr", default=ServiceConfig.metrics_addr,
                        help="address /metrics listens on (default %(default)s; it has no "
                             "authentication)")


def _codec_link_parsers(run_sub: Any) -> None:
    tx = run_sub.add_parser("codec-tx", help="codec link sender: capture, encode, send")
    tx.add_argument("--input", default="mic",
                    help="'mic' (a sound device) or an audio file, sent in real time")
    tx.add_argument("--connect", required=True, help="the receiver, e.g. tcp://HOST:5557")
    tx.add_argument("--kbps", type=float, default=16.0,
                    help="operating point (wideband: 12, 16, 24, 32; lowdelay: 16, 24, 32)")
    tx.add_argument("--stream", default="mic", help="stream id of the link")
    tx.add_argument("--start-at", type=float, default=None,
                    help="Unix time to start capturing (to start many senders together)")
    rx = run_sub.add_parser("codec-rx", help="codec link receiver: receive, decode, play")
    rx.add_argument("--bind", default="tcp://127.0.0.1:5557",
                    help="endpoint to listen on (non-loopback: with --keys, or --insecure)")
    rx.add_argument("--output", default="speaker", help="'speaker' (a sound device) or a WAV")
    rx.add_argument("--stream", default="mic",
                    help="the one stream to play (codec-tx --stream); others are refused")
    rx.add_argument("--sender-key", default=None,
                    help="with --keys: play only this sender's packets (its .key file or z85 "
                         "public key)")
    _security_options(tx, server=False)
    _security_options(rx, server=True)
    rx.add_argument("--jitter-ms", type=float, default=40.0, help="jitter buffer depth")
    rx.add_argument("--until-end", action=argparse.BooleanOptionalAction, default=None,
                    help="stop at the stream's end (default: yes for a file output)")
    for cmd, func in ((tx, cmd_codec_tx), (rx, cmd_codec_rx)):
        cmd.add_argument("--codec", choices=CODEC_MODELS, default="wideband")
        cmd.add_argument("--device", default=None, help="sound device: index or part of its "
                         "name (see `sigstream devices`)")
        cmd.add_argument("--device-latency", choices=("high", "low"), default="high",
                         help="the sound device's buffering: high (no glitches on a busy "
                              "machine) or low (less delay)")
        cmd.add_argument("--backend", choices=BACKENDS, default="auto")
        cmd.add_argument("--seconds", type=float, default=None, help="stop after S seconds")
        _metrics_options(cmd)
        cmd.add_argument("--report", type=Path, default=None,
                         help="write the link's counters and latency here (JSON) at exit")
        cmd.set_defaults(func=func)


def _run_commands(sub: Any) -> None:
    """``run spectral|ecg`` (the service) and ``run codec-tx|codec-rx`` (the codec link)."""
    run = sub.add_parser("run", help="run a service or a codec link end until Ctrl-C / SIGTERM")
    run_sub = run.add_subparsers(dest="path", required=True)
    service = argparse.ArgumentParser(add_help=False)
    # Defaults are the service's own (ServiceConfig), so the two cannot drift apart.
    service.add_argument("--ingest", default=ServiceConfig.ingest, help="PULL endpoint to bind")
    service.add_argument("--publish", default=ServiceConfig.publish, help="PUB endpoint to bind")
    service.add_argument("--backend", choices=BACKENDS, default=ServiceConfig.backend)
    service.add_argument(
        "--model", choices=sorted({*ROI_MODELS, *ECG_MODELS}), default=ServiceConfig.model,
        help="model of the path (default: spectral resnet_unet, ecg embedding)",
    )
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
        "--restart-budget", type=int, default=ServiceConfig.restart_budget,
        help="stage restarts allowed per minute before the service stops",
    )
    _metrics_options(service)
    _security_options(service, server=True)
    service.add_argument(
        "--weights", type=Path, default=None, help="weights file to serve instead of the shipped"
    )
    service.add_argument("--templates", type=Path, default=None,
                     help="ecg: SQLite store of enrolled users (default $SIGSTREAM_DATA/"
                          "ecg_users.sqlite)")
    service.add_argument("--fuse-beats", type=int, default=ServiceConfig.fuse_beats,
                     help="ecg: beats in the fused decision (calibrated: 1, 3, 5, 10)")
    service.add_argument("--templates-key", type=Path, default=None,
                         help="ecg: key file the templates are encrypted with "
                              "(`sigstream keys templates-key`)")
    for path in PATHS:
        run_sub.add_parser(path, parents=[service], help=f"the {path} service").set_defaults(
            func=cmd_run)
    _codec_link_parsers(run_sub)


def _source_commands(sub: Any) -> None:
    """``source spectral-sim|replay|ecg-sim|ecg-replay``."""
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
    ecg_sim = source_sub.add_parser("ecg-sim", help="simulated ECG wearables (ECGSYN-style)")
    ecg_sim.add_argument("--connect", required=True)
    ecg_sim.add_argument("--stream", default="wearable", help="stream id (prefix if --streams>1)")
    ecg_sim.add_argument("--streams", type=int, default=1, help="simulated wearables")
    ecg_sim.add_argument("--fs", type=float, default=250.0, help="samples per second")
    ecg_sim.add_argument("--chunk-ms", type=float, default=250.0, help="samples per message, ms")
    ecg_sim.add_argument("--seconds", type=float, default=None, help="stop after S seconds")
    ecg_sim.add_argument("--subject", type=int, default=0,
                         help="cohort subject of the first wearable (the next ones follow)")
    ecg_sim.add_argument("--session", type=int, default=1, help="recording session")
    ecg_sim.add_argument("--snr-db", type=float, default=None, help="override the noise level")
    ecg_sim.add_argument("--seed", type=int, default=0, help="cohort seed")
    ecg_replay = source_sub.add_parser("ecg-replay",
                                       help="replay an ECG file (CSV/NPY/WFDB) at its rate")
    ecg_replay.add_argument("file")
    ecg_replay.add_argument("--connect", required=True)
    ecg_replay.add_argument("--fs", type=float, default=None,
                            help="sample rate of a CSV/NPY file (WFDB has its own)")
    ecg_replay.add_argument("--column", default=None, help="CSV column (name or index)")
    ecg_replay.add_argument("--stream", default=None, help="stream id (default: the file name)")
    ecg_replay.add_argument("--chunk-ms", type=float, default=250.0)
    ecg_replay.add_argument("--loop", action="store_true", help="start again at the end")
    ecg_replay.add_argument("--seconds", type=float, default=None)
    for ecg_source in (ecg_sim, ecg_replay):
        ecg_source.add_argument("--claim", default=None, help="header claim: the user to verify")
        ecg_source.add_argument("--explain", action="store_true",
                                help="ask for a Grad-CAM heatmap with every beat")
        ecg_source.add_argument("--embed", action="store_true",
                                help="ask for each beat's embedding (live enrolment)")
    for each_source in (sim, replay, ecg_sim, ecg_replay):
        each_source.add_argument(
            "--buffer-mb", type=float, default=DEFAULT_BUFFER_BYTES / 2**20,
            help="MiB of messages kept while the service is away or slow (default "
                 "%(default)g; a restart takes ~20 s); beyond it the oldest are dropped and "
                 "counted",
        )
        each_source.add_argument(
            "--give-up-s", type=float, default=None,
            help="exit with status 1 once messages waited S s with the service taking none "
                 "(default: never; the instrument keeps being read and buffered)",
        )
    for each_source in (sim, replay, ecg_sim, ecg_replay):
        _security_options(each_source, server=False)
    source.set_defaults(func=cmd_source)


def _tap_command(sub: Any) -> None:
    """``tap``."""
    tap = sub.add_parser("tap", help="print results as they arrive")
    tap.add_argument("--connect", default="tcp://127.0.0.1:5556")
    tap.add_argument("--topic", default="", help="topic prefix, e.g. result.spectral/inst-1")
    tap.add_argument("--count", type=int, default=None)
    tap.add_argument("--seconds", type=float, default=None)
    tap.add_argument("--json", action="store_true", help="one JSON object per line")
    _security_options(tap, server=False)
    tap.set_defaults(func=cmd_tap)


def _train_eval_commands(sub: Any) -> None:
    """``train`` and ``eval``."""
    train = sub.add_parser("train", help="train shipped weights (reproducible by seed)")
    train.add_argument("task", choices=("roi", "ecg", "codec"))
    train.add_argument("--model", default=None,
                       help=f"roi: {', '.join(ROI_MODELS)}; ecg: {', '.join(ECG_MODELS)}; "
                            f"codec: {', '.join(CODEC_CONFIGS)} (default wideband)")
    train.add_argument("--loss", choices=CODEC_LOSSES, default="mae",
                       help="codec only: plain MAE (the shipped defaults) or the multi-band loss")
    train.add_argument("--kbps", default="12,16,24,32",
                       help="codec: bitrates to calibrate, comma-separated")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--steps", type=int, default=None, help="optimiser steps (default: shipped)")
    train.add_argument("--out", type=Path, default=None, help="folder (default: shipped weights)")
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("eval", help="regenerate the evaluation report")
    evaluate.add_argument("task", choices=("roi", "ecg", "codec"))
    evaluate.add_argument("--backend", choices=BACKENDS, default="auto", help="codec only")
    evaluate.add_argument("--json", type=Path, default=None, help="write the report here")
    evaluate.add_argument("--n-test", type=int, default=None,
                          help="roi: test spectra (default 30000)")
    evaluate.add_argument("--quick", action="store_true", help="ecg: a small, fast run")
    evaluate.add_argument("--data-dir", type=Path, default=Path(".data/ecg"),
                          help="ecg: the real recordings (make ecg-data)")
    evaluate.set_defaults(func=cmd_eval)


def _ecg_commands(sub: Any) -> None:
    """``ecg enroll|explain|users|remove``."""
    ecg = sub.add_parser("ecg", help="ECG users: enrol, list, remove, explain")
    ecg.add_argument("--db", type=Path, default=None,
                     help="template store (default $SIGSTREAM_DATA/ecg_users.sqlite)")
    ecg.add_argument("--templates-key", type=Path, default=None,
                     help="key file the templates are encrypted with")
    ecg_sub = ecg.add_subparsers(dest="action", required=True)
    enroll = ecg_sub.add_parser("enroll", help="enrol a user from a recording or a live stream")
    enroll.add_argument("--user", required=True)
    enroll.add_argument("--beats", type=int, default=None,
                        help="beats to enrol from (file: all good ones; live: 20)")
    explain = ecg_sub.add_parser("explain", help="Grad-CAM heatmaps of beats, as PNG files")
    explain.add_argument("--out", type=Path, required=True, help="folder for the PNG files")
    explain.add_argument("--user", default=None,
                         help="explain the match against this user (default: the best match)")
    explain.add_argument("--beats", type=int, default=5, help="beats to explain")
    for cmd in (enroll, explain):
        cmd.add_argument("--file", type=Path, default=None, help="a CSV / NPY / WFDB recording")
        cmd.add_argument("--fs", type=float, default=None, help="sample rate of a CSV/NPY file")
        cmd.add_argument("--column", default=None, help="CSV column (name or index)")
        cmd.add_argument("--stream", default=None, help="live: the wearable's stream id")
        cmd.add_argument("--results", default="tcp://127.0.0.1:5556",
                         help="live: the service's results endpoint")
        cmd.add_argument("--timeout", type=float, default=60.0, help="live: give up after S s")
        cmd.add_argument("--max-file-mb", type=float, default=128.0,
                         help="file: refuse a recording larger than this (MiB)")
        _security_options(cmd, server=False)
    enroll.add_argument("--device-key", default=None,
                        help="live, with --keys: the enrolling wearable's public key (.key file "
                             "or z85); only its beats are enrolled")
    enroll.add_argument("--insecure", action="store_true",
                        help="live without --keys: enrol whatever arrives on --stream, from "
                             "anyone who can send to the service")
    users = ecg_sub.add_parser("users", help="list enrolled users")
    users.add_argument("--json", action="store_true")
    remove = ecg_sub.add_parser("remove", help="delete a user's templates")
    remove.add_argument("--user", required=True)
    ecg.set_defaults(func=cmd_ecg)


def _codec_commands(sub: Any) -> None:
    """``codec encode|decode|info``."""
    codec = sub.add_parser("codec", help="offline coding: WAV <-> .sgc files")
    codec_sub = codec.add_subparsers(dest="action", required=True)
    enc = codec_sub.add_parser("encode", help="code an audio file into an .sgc file")
    enc.add_argument("input", type=Path)
    enc.add_argument("output", type=Path)
    enc.add_argument("--kbps", type=float, default=16.0)
    enc.add_argument("--codec", choices=CODEC_MODELS, default="wideband")
    enc.add_argument("--channel", type=int, default=None, help="channel of a multi-channel file")
    dec = codec_sub.add_parser("decode", help="decode an .sgc file into a WAV file")
    dec.add_argument("input", type=Path)
    dec.add_argument("output", type=Path)
    dec.add_argument("--max-seconds", type=float, default=3600.0,
                     help="refuse a file that declares more audio than this (s)")
    info = codec_sub.add_parser("info", help="print an .sgc file's header and bitrate")
    info.add_argument("input", type=Path)
    for cmd in (enc, dec):
        cmd.add_argument("--backend", choices=BACKENDS, default="auto")
    codec.set_defaults(func=cmd_codec)


def _engines_commands(sub: Any) -> None:
    """``engines build|list``."""
    engines = sub.add_parser("engines", help="compile engines ahead of time; show the cache")
    engines_sub = engines.add_subparsers(dest="action", required=True)
    build = engines_sub.add_parser("build", help="compile every engine (or one) into the cache")
    build.add_argument("--backend", choices=BACKENDS, default="auto")
    build.add_argument("--precision", choices=("fp32", "fp16"), default="fp32")
    build.add_argument("--model", default="all",
                       help="'all' or an engine name (see `sigstream engines list`)")
    build.add_argument("--task-gate", action="store_true",
                       help="also require the task metric (peak F1, EER, accuracy, PESQ) to "
                            "match eager's")
    listing = engines_sub.add_parser("list", help="the cached engines")
    listing.add_argument("--json", action="store_true")
    engines.set_defaults(func=cmd_engines)


def _keys_commands(sub: Any) -> None:
    """``keys generate|templates-key``."""
    keys = sub.add_parser("keys", help="make CURVE key pairs and the templates key")
    keys_sub = keys.add_subparsers(dest="action", required=True)
    generate = keys_sub.add_parser("generate", help="a CURVE key pair: NAME.key, NAME.key_secret")
    generate.add_argument("--out", type=Path, required=True, help="the key folder (--keys)")
    generate.add_argument("--name", default="server",
                          help="server, client, or a device's name (default %(default)s)")
    templates_key = keys_sub.add_parser("templates-key",
                                        help="a key that encrypts the ECG templates at rest")
    templates_key.add_argument("--out", type=Path, required=True, help="the key file to write")
    keys.set_defaults(func=cmd_keys)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sigstream", description="Real-time signal processing over ZeroMQ."
    )
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, and an error's traceback")
    sub = parser.add_subparsers(dest="command", required=True)
    for add_group in (_run_commands, _source_commands, _tap_command, _train_eval_commands,
                      _ecg_commands, _codec_commands, _engines_commands, _keys_commands):
        add_group(sub)

    devices = sub.add_parser("devices", help="list sound devices (for --device)")
    devices.set_defaults(func=cmd_devices)

    demo = sub.add_parser("demo", help="run the spectral service on local endpoints, a few s")
    demo.add_argument("--seconds", type=float, default=8.0)
    demo.add_argument("--backend", choices=BACKENDS, default="auto")
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
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(processName)s %(name)s %(levelname)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except (SigstreamError, OSError) as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"sigstream: {_reason(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
