"""What each ``sigstream`` command does, once :mod:`stream.cli` has parsed its line.

Every handler takes the parsed ``argparse.Namespace`` and returns the exit status; heavy
imports (torch, the service) happen inside the handler that needs them, so ``--help`` stays
light. Environment variables are read here and nowhere else: ``SIGSTREAM_CACHE`` (engine cache
folder, default ``~/.cache/sigstream/engines``) and ``SIGSTREAM_DATA`` (the ECG template store
``ecg_users.sqlite``, default ``~/.local/share/sigstream``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from stream.errors import SecurityError
from stream.security import ClientSecurity, ServerSecurity, client_context, read_public_key
from stream.service_config import ServiceConfig

__all__ = [
    "CODEC_CONFIGS",
    "CODEC_LOSSES",
    "CODEC_MODELS",
    "ECG_MODELS",
    "ROI_MODELS",
    "cmd_codec",
    "cmd_codec_rx",
    "cmd_codec_tx",
    "cmd_demo",
    "cmd_devices",
    "cmd_ecg",
    "cmd_engines",
    "cmd_eval",
    "cmd_keys",
    "cmd_run",
    "cmd_source",
    "cmd_tap",
    "cmd_train",
]

# Model keys of engines.roi.specs.ROI_SPECS and engines.ecg.specs.ECG_SPECS, spelled out so
# `--help` does not load torch (a test pins them to the specs).
ROI_MODELS = ("cnn", "resnet", "unet", "resnet_unet")
ECG_MODELS = ("cnn", "embedding")
# Keys of engines.codec.specs.CODECS and engines.codec.model.CONFIGS / losses.LOSSES.
CODEC_MODELS = ("wideband", "lowdelay", "wideband-multiband", "lowdelay-multiband")
CODEC_CONFIGS = ("wideband", "lowdelay")
CODEC_LOSSES = ("mae", "multiband")


def _cache_dir() -> Path:
    return Path(os.environ.get("SIGSTREAM_CACHE", Path.home() / ".cache" / "sigstream" / "engines"))


def _templates_db() -> Path:
    data = os.environ.get("SIGSTREAM_DATA", Path.home() / ".local" / "share" / "sigstream")
    return Path(data) / "ecg_users.sqlite"


def _server_security(args: argparse.Namespace) -> ServerSecurity | None:
    return None if args.keys is None else ServerSecurity.from_folder(args.keys, args.key)


def _client_security(args: argparse.Namespace) -> ClientSecurity | None:
    if args.keys is None:
        return None
    return ClientSecurity.from_folder(args.keys, args.key, server=args.server_key)


def _templates_key(args: argparse.Namespace) -> Path | None:
    """``--templates-key``, checked before anything starts (one line and exit 2 if unusable)."""
    from engines.ecg.templates import TemplateStoreError, read_templates_key

    if args.templates_key is None:
        return None
    try:
        read_templates_key(args.templates_key)
    except TemplateStoreError as exc:
        raise SecurityError(str(exc)) from None
    return Path(args.templates_key)


def cmd_run(args: argparse.Namespace) -> int:
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
        queue_bytes=max(1, int(args.queue_mb * 2**20)),
        queue_policy=args.queue_policy,
        deadline_ms=args.deadline_ms,
        watchdog_s=args.watchdog_s,
        restart_budget=args.restart_budget,
        metrics_port=args.metrics_port,
        metrics_addr=args.metrics_addr,
        cache_dir=_cache_dir(),
        weights=args.weights,
        templates=(args.templates or _templates_db()) if args.path == "ecg" else None,
        templates_key=_templates_key(args) if args.path == "ecg" else None,
        fuse_beats=args.fuse_beats,
        security=_server_security(args),
        insecure=args.insecure,
    )
    return serve(config)


def cmd_source(args: argparse.Namespace) -> int:
    if not args.buffer_mb > 0:
        raise SystemExit("sigstream source: --buffer-mb must be > 0")
    context = client_context(_client_security(args))  # CURVE with --keys
    try:
        return _run_source(args, {"buffer_bytes": max(1, int(args.buffer_mb * 2**20)),
                                  "give_up_s": args.give_up_s, "context": context})
    finally:
        context.term()


def _run_source(args: argparse.Namespace, link: dict[str, Any]) -> int:
    from stream.source_commands import run_ecg_replay, run_ecg_sim, run_replay, run_spectral_sim

    if args.source == "ecg-sim":
        return run_ecg_sim(
            connect=args.connect, stream=args.stream, streams=args.streams, fs_hz=args.fs,
            chunk_ms=args.chunk_ms, seconds=args.seconds, subject=args.subject,
            session=args.session, snr_db=args.snr_db, seed=args.seed, header=_ecg_header(args),
            **link,
        )
    if args.source == "ecg-replay":
        return run_ecg_replay(
            Path(args.file), connect=args.connect, stream=args.stream, fs_hz=args.fs,
            column=args.column, chunk_ms=args.chunk_ms, loop=args.loop, seconds=args.seconds,
            header=_ecg_header(args), **link,
        )
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
            **link,
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
        **link,
    )


def cmd_tap(args: argparse.Namespace) -> int:
    from stream.tap import run_tap

    context = client_context(_client_security(args))  # CURVE with --keys
    try:
        return run_tap(
            connect=args.connect, topic=args.topic, count=args.count, seconds=args.seconds,
            as_json=args.json, context=context,
        )
    finally:
        context.term()


def _ecg_header(args: argparse.Namespace) -> dict[str, object]:
    header: dict[str, object] = {}
    if args.claim:
        header["claim"] = args.claim
    if args.explain:
        header["explain"] = True
    if args.embed:
        header["embed"] = True
    return header


def cmd_train(args: argparse.Namespace) -> int:
    if args.task == "codec":
        from engines.codec.train import train_codec

        config = args.model or "wideband"
        if config not in CODEC_CONFIGS:
            raise SystemExit(f"sigstream train codec: --model must be one of {CODEC_CONFIGS}")
        train_codec(config=config, loss=args.loss, kbps=_kbps_list(args.kbps), seed=args.seed,
                    out_dir=args.out, steps=args.steps)
        return 0
    if args.model is None:
        raise SystemExit(f"sigstream train {args.task}: --model is required")
    if args.task == "ecg":
        from engines.ecg.train import train_ecg

        if args.model not in ECG_MODELS:
            raise SystemExit(f"sigstream train ecg: --model must be one of {ECG_MODELS}")
        train_ecg(model=args.model, seed=args.seed, out_dir=args.out)
        return 0
    from engines.roi.train import train_roi

    if args.model not in ROI_MODELS:
        raise SystemExit(f"sigstream train roi: --model must be one of {ROI_MODELS}")
    kwargs = {} if args.steps is None else {"steps": args.steps}
    train_roi(model=args.model, seed=args.seed, out_dir=args.out, **kwargs)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    if args.task == "codec":
        from engines.codec.evaluate import evaluate_codec

        evaluate_codec(json_path=args.json, backend=args.backend)
        return 0
    if args.task == "ecg":
        from engines.ecg.evaluate import evaluate_ecg

        evaluate_ecg(json_path=args.json, quick=args.quick, data_dir=args.data_dir)
        return 0
    from engines.roi.evaluate import evaluate_roi

    kwargs = {} if args.n_test is None else {"n_test": args.n_test}
    evaluate_roi(json_path=args.json, **kwargs)
    return 0


def cmd_ecg(args: argparse.Namespace) -> int:
    from stream.ecg_tools import run_ecg_command

    live = getattr(args, "stream", None) is not None
    device_key = getattr(args, "device_key", None)
    return run_ecg_command(
        args, db=args.db or _templates_db(), templates_key=_templates_key(args),
        security=_client_security(args) if live else None,
        device_key=None if device_key is None else read_public_key(device_key).decode(),
    )


def _kbps_list(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(k) for k in text.split(",") if k.strip())
    except ValueError:
        raise SystemExit(f"--kbps: expected numbers separated by commas, got {text!r}") from None
    if not values:
        raise SystemExit("--kbps: give at least one bitrate")
    return values


def cmd_codec_tx(args: argparse.Namespace) -> int:
    from stream.codec_sender import TxConfig, run_codec_tx

    return run_codec_tx(TxConfig(
        input=args.input, connect=args.connect, stream=args.stream, start_at=args.start_at,
        codec=args.codec,
        kbps=args.kbps, backend=args.backend, device=args.device,
        device_latency=args.device_latency, seconds=args.seconds,
        cache_dir=_cache_dir(), metrics_port=args.metrics_port, metrics_addr=args.metrics_addr,
        report=args.report, security=_client_security(args),
    ))


def cmd_codec_rx(args: argparse.Namespace) -> int:
    from stream.codec_receiver import RxConfig, run_codec_rx

    return run_codec_rx(RxConfig(
        bind=args.bind, output=args.output, codec=args.codec, backend=args.backend,
        device=args.device, device_latency=args.device_latency, stream=args.stream,
        jitter_ms=args.jitter_ms, seconds=args.seconds,
        until_end=args.until_end, cache_dir=_cache_dir(), metrics_port=args.metrics_port,
        metrics_addr=args.metrics_addr, report=args.report, security=_server_security(args),
        sender=None if args.sender_key is None else read_public_key(args.sender_key),
        insecure=args.insecure,
    ))


def cmd_codec(args: argparse.Namespace) -> int:
    from stream.codec_tools import run_codec_command

    return run_codec_command(args, cache_dir=_cache_dir())


def cmd_engines(args: argparse.Namespace) -> int:
    from stream.engine_tools import run_engines_command

    return run_engines_command(args, cache_dir=_cache_dir(),
                               service_max_batch=ServiceConfig.max_batch)


def cmd_devices(args: argparse.Namespace) -> int:
    from devices.sound import format_devices, list_devices

    print(format_devices(list_devices()))
    return 0

def cmd_keys(args: argparse.Namespace) -> int:
    if args.action == "generate":
        from stream.security import generate_keys

        public, secret = generate_keys(args.out, args.name)
        print(f"public key {public} (give it to the other end; a server lists its clients' in "
              f"{args.out / 'allowed'}/)")
        print(f"secret key {secret} (mode 0600: keep it on this machine only)")
        return 0
    from engines.ecg.templates import TemplateStoreError, create_templates_key

    try:
        path = create_templates_key(args.out)
    except TemplateStoreError as exc:
        raise SecurityError(str(exc)) from None
    print(f"templates key {path} (mode 0600; back it up apart from the template store: "
          "without it the templates cannot be read)")
    return 0

def cmd_demo(args: argparse.Namespace) -> int:
    from stream.demo import run_demo

    return run_demo(seconds=args.seconds, backend=args.backend, cache_dir=_cache_dir())
