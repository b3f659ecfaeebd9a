"""The codec path's command line: the live link (``run codec-tx|codec-rx``), offline coding
(``codec encode|decode|info``) and ``train|eval codec``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from stream.cli_options import (
    backend_option,
    client_security,
    eval_options,
    metrics_options,
    security_options,
    server_security,
    train_options,
)
from stream.errors import ConfigError
from stream.paths.spec import CliGroups, Environment

__all__ = ["CODEC_CONFIGS", "CODEC_LOSSES", "CODEC_MODELS", "add_commands"]

# Keys of engines.codec.specs.CODECS and engines.codec.configs.CONFIGS / losses.LOSSES (a test
# pins them).
CODEC_MODELS = ("wideband", "lowdelay", "wideband-multiband", "lowdelay-multiband")
CODEC_CONFIGS = ("wideband", "lowdelay")
CODEC_LOSSES = ("mae", "multiband")


def add_commands(groups: CliGroups) -> None:
    _link_commands(groups.run)
    _offline_commands(groups.top)
    train = groups.train.add_parser("codec", help="the autoencoder codecs")
    train.add_argument("--model", choices=CODEC_CONFIGS, default="wideband")
    train.add_argument("--loss", choices=CODEC_LOSSES, default="mae",
                       help="plain MAE (the shipped defaults) or the multi-band loss")
    train.add_argument("--kbps", default="12,16,24,32",
                       help="bitrates to calibrate, comma-separated")
    train.add_argument("--steps", type=int, default=None,
                       help="optimiser steps (default: shipped)")
    train_options(train)
    train.set_defaults(func=_train)
    evaluate = groups.eval.add_parser("codec", help="PESQ, STOI, SNR vs Opus and G.711")
    backend_option(evaluate)
    eval_options(evaluate)
    evaluate.set_defaults(func=_evaluate)


def _link_commands(run: Any) -> None:
    tx = run.add_parser("codec-tx", help="codec link sender: capture, encode, send")
    tx.add_argument("--input", default="mic",
                    help="'mic' (a sound device) or an audio file, sent in real time")
    tx.add_argument("--connect", required=True, help="the receiver, e.g. tcp://HOST:5557")
    tx.add_argument("--kbps", type=float, default=16.0,
                    help="operating point (wideband: 12, 16, 24, 32; lowdelay: 16, 24, 32)")
    tx.add_argument("--stream", default="mic", help="stream id of the link")
    tx.add_argument("--start-at", type=float, default=None,
                    help="Unix time to start capturing (to start many senders together)")
    rx = run.add_parser("codec-rx", help="codec link receiver: receive, decode, play")
    rx.add_argument("--bind", default="tcp://127.0.0.1:5557",
                    help="endpoint to listen on (non-loopback: with --keys, or --insecure)")
    rx.add_argument("--output", default="speaker", help="'speaker' (a sound device) or a WAV")
    rx.add_argument("--stream", default="mic",
                    help="the one stream to play (codec-tx --stream); others are refused")
    rx.add_argument("--sender-key", default=None,
                    help="with --keys: play only this sender's packets (its .key file or z85 "
                         "public key)")
    security_options(tx, server=False)
    security_options(rx, server=True)
    rx.add_argument("--jitter-ms", type=float, default=40.0, help="jitter buffer depth")
    rx.add_argument("--until-end", action=argparse.BooleanOptionalAction, default=None,
                    help="stop at the stream's end (default: yes for a file output)")
    for cmd, func in ((tx, _codec_tx), (rx, _codec_rx)):
        cmd.add_argument("--codec", choices=CODEC_MODELS, default="wideband")
        cmd.add_argument("--device", default=None, help="sound device: index or part of its "
                         "name (see `sigstream devices`)")
        cmd.add_argument("--device-latency", choices=("high", "low"), default="high",
                         help="the sound device's buffering: high (no glitches on a busy "
                              "machine) or low (less delay)")
        backend_option(cmd)
        cmd.add_argument("--seconds", type=float, default=None, help="stop after S seconds")
        metrics_options(cmd)
        cmd.add_argument("--report", type=Path, default=None,
                         help="write the link's counters and latency here (JSON) at exit")
        cmd.set_defaults(func=func)


def _offline_commands(top: Any) -> None:
    """``codec encode|decode|info``."""
    codec = top.add_parser("codec", help="offline coding: WAV <-> .sgc files")
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
        backend_option(cmd)
    codec.set_defaults(func=_offline)


def _codec_tx(args: argparse.Namespace, env: Environment) -> int:
    from stream.paths.codec.sender import TxConfig, run_codec_tx

    return run_codec_tx(TxConfig(
        input=args.input, connect=args.connect, stream=args.stream, start_at=args.start_at,
        codec=args.codec, kbps=args.kbps, backend=args.backend, device=args.device,
        device_latency=args.device_latency, seconds=args.seconds, cache_dir=env.cache_dir,
        metrics_port=args.metrics_port, metrics_addr=args.metrics_addr, report=args.report,
        security=client_security(args),
    ))


def _codec_rx(args: argparse.Namespace, env: Environment) -> int:
    from stream.paths.codec.receiver import RxConfig, run_codec_rx
    from stream.security import read_public_key

    return run_codec_rx(RxConfig(
        bind=args.bind, output=args.output, codec=args.codec, backend=args.backend,
        device=args.device, device_latency=args.device_latency, stream=args.stream,
        jitter_ms=args.jitter_ms, seconds=args.seconds, until_end=args.until_end,
        cache_dir=env.cache_dir, metrics_port=args.metrics_port, metrics_addr=args.metrics_addr,
        report=args.report, security=server_security(args),
        sender=None if args.sender_key is None else read_public_key(args.sender_key),
        insecure=args.insecure,
    ))


def _offline(args: argparse.Namespace, env: Environment) -> int:
    from stream.paths.codec.tools import run_codec_command

    return run_codec_command(args, cache_dir=env.cache_dir)


def _kbps_list(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(k) for k in text.split(",") if k.strip())
    except ValueError:
        raise ConfigError(f"--kbps: expected numbers separated by commas, got {text!r}") from None
    if not values:
        raise ConfigError("--kbps: give at least one bitrate")
    return values


def _train(args: argparse.Namespace, env: Environment) -> int:
    from engines.codec.train import train_codec

    train_codec(config=args.model, loss=args.loss, kbps=_kbps_list(args.kbps), seed=args.seed,
                out_dir=args.out, steps=args.steps)
    return 0


def _evaluate(args: argparse.Namespace, env: Environment) -> int:
    from engines.codec.evaluate import evaluate_codec

    evaluate_codec(json_path=args.json, backend=args.backend)
    return 0
