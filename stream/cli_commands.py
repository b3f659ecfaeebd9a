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

__all__ = [
    "cmd_demo", "cmd_devices", "cmd_engines", "cmd_keys", "cmd_run", "cmd_tap", "cmd_view",
]


def cmd_run(args: argparse.Namespace, env: Environment) -> int:
    from stream.serving import serve

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
        batch_timeout_s=args.batch_timeout_s,
        restart_budget=args.restart_budget,
        metrics_port=args.metrics_port,
        metrics_addr=args.metrics_addr,
        cache_dir=env.cache_dir,
        weights=args.weights,
        security=server_security(args),
        insecure=args.insecure,
        mirror=args.mirror,
    )
    if args.view_port is None:
        return serve(config)
    return _serve_with_view(config, args.view_port)


def _serve_with_view(config: ServiceConfig, port: int) -> int:
    """``run ... --view-port``: the service, and the view in a child process beside it."""
    import dataclasses
    import logging
    import socket
    import tempfile

    from stream.errors import ConfigError
    from stream.serving import serve
    from stream.view.process import ViewProcess
    from stream.view.server import ViewConfig

    if config.security is not None:
        raise ConfigError("--view-port serves a page without keys; with --keys run "
                          "`sigstream view --keys ...` with a client key instead")
    if config.publish.endswith(":*"):
        raise ConfigError("--view-port needs a fixed --publish port")
    if not config.metrics_port:  # the view reads the service's health and counts there
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            config = dataclasses.replace(config, metrics_port=probe.getsockname()[1])
    with tempfile.TemporaryDirectory(prefix="sigstream-view-") as folder:
        mirror = config.mirror or f"ipc://{folder}/mirror"
        config = dataclasses.replace(config, mirror=mirror)
        addr = "127.0.0.1" if config.metrics_addr in ("0.0.0.0", "::") else config.metrics_addr
        metrics = f"http://{addr}:{config.metrics_port}"
        view = ViewProcess(ViewConfig(connect=_from_here(config.publish),
                                      mirror=_from_here(mirror), metrics=metrics,
                                      port=port))
        url = view.start()
        logging.getLogger("stream.view").info("view on %s", url)
        try:
            return serve(config)
        finally:
            view.stop()


def _from_here(endpoint: str) -> str:
    """How a process on this machine connects to a bound endpoint: a wildcard address
    (``*``, ``0.0.0.0``, ``[::]``) through loopback."""
    for wildcard in ("tcp://*:", "tcp://0.0.0.0:", "tcp://[::]:"):
        if endpoint.startswith(wildcard):
            return "tcp://127.0.0.1:" + endpoint[len(wildcard):]
    return endpoint


def cmd_view(args: argparse.Namespace, env: Environment) -> int:
    from stream.view.process import run_view
    from stream.view.server import ViewConfig

    return run_view(ViewConfig(
        connect=args.connect, mirror=args.mirror, metrics=args.metrics,
        meters=tuple(args.meters), host=args.addr, port=args.port,
        security=client_security(args)))


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

    return run_demo(seconds=args.seconds, backend=args.backend, cache_dir=env.cache_dir,
                    view_port=None if args.view_port < 0 else args.view_port)
