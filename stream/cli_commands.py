"""What each generic ``sigstream`` command does, once :mod:`stream.cli` has parsed its line.

Every handler takes the parsed ``argparse.Namespace`` and the :class:`~stream.paths.Environment`
and returns the exit status; heavy imports (torch, the service) happen inside the handler that
needs them, so ``--help`` stays light. The paths' own verbs are in ``stream/paths/<name>/``.
"""

from __future__ import annotations

import argparse

from stream.cli_options import client_security, server_security
from stream.paths import Environment, path_spec
from stream.service_config import ServiceConfig

__all__ = ["cmd_demo", "cmd_devices", "cmd_engines", "cmd_keys", "cmd_run", "cmd_tap"]


def cmd_run(args: argparse.Namespace, env: Environment) -> int:
    from stream.service import serve

    spec = path_spec(args.path)
    config = ServiceConfig(
        path=args.path,
        settings=None if spec.settings is None else spec.settings.from_args(args, env),
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
        cache_dir=env.cache_dir,
        weights=args.weights,
        security=server_security(args),
        insecure=args.insecure,
    )
    return serve(config)


def cmd_tap(args: argparse.Namespace, env: Environment) -> int:
    from stream.security import client_context
    from stream.tap import run_tap

    context = client_context(client_security(args))  # CURVE with --keys
    try:
        return run_tap(
            connect=args.connect, topic=args.topic, count=args.count, seconds=args.seconds,
            as_json=args.json, context=context,
        )
    finally:
        context.term()


def cmd_engines(args: argparse.Namespace, env: Environment) -> int:
    from stream.engine_tools import run_engines_command

    return run_engines_command(args, cache_dir=env.cache_dir,
                               service_max_batch=ServiceConfig.max_batch)


def cmd_devices(args: argparse.Namespace, env: Environment) -> int:
    from devices.sound import format_devices, list_devices

    print(format_devices(list_devices()))
    return 0


def cmd_keys(args: argparse.Namespace, env: Environment) -> int:
    from stream.security import generate_keys

    public, secret = generate_keys(args.out, args.name)
    print(f"public key {public} (give it to the other end; a server lists its clients' in "
          f"{args.out / 'allowed'}/)")
    print(f"secret key {secret} (mode 0600: keep it on this machine only)")
    return 0


def cmd_demo(args: argparse.Namespace, env: Environment) -> int:
    from stream.demo import run_demo

    return run_demo(seconds=args.seconds, backend=args.backend, cache_dir=env.cache_dir)
