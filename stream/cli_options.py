"""Options several ``sigstream`` commands share, for :mod:`stream.cli` and the paths' own
verbs (:attr:`stream.paths.PathSpec.cli`): CURVE keys, metrics, and the environment.

Building the parser must stay light (``sigstream --help``): what only a running command needs
(ZeroMQ, the keys) is imported by the function that needs it."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stream.errors import ConfigError
from stream.paths.spec import Environment
from stream.service_config import BACKENDS

if TYPE_CHECKING:
    from stream.security import ClientSecurity, ServerSecurity

__all__ = [
    "DEFAULT_BUFFER_BYTES",
    "backend_option",
    "client_security",
    "environment",
    "eval_options",
    "metrics_options",
    "push_link",
    "security_options",
    "server_security",
    "source_options",
    "train_options",
]

DEFAULT_BUFFER_BYTES = 8 << 20
"""Default ``--buffer-mb`` (and :func:`stream.sources.push_frames` buffer): 8 MiB, a 23 s
service restart of one 512-sample spectrometer at 100 spectra/s (≈ 2.1 KB a message, ≈ 4.8 MB
in all) with room to spare."""


def environment() -> Environment:
    """``SIGSTREAM_CACHE`` (engine cache, default ``~/.cache/sigstream/engines``) and
    ``SIGSTREAM_DATA`` (the paths' state, default ``~/.local/share/sigstream``): the only
    environment variables sigstream reads, here, at the entry point."""
    home = Path.home()
    return Environment(
        cache_dir=Path(os.environ.get("SIGSTREAM_CACHE", home / ".cache/sigstream/engines")),
        data_dir=Path(os.environ.get("SIGSTREAM_DATA", home / ".local/share/sigstream")),
    )


def backend_option(parser: argparse.ArgumentParser, *, default: str = "auto") -> None:
    """``--backend``: the engines' backend (``auto`` picks by the machine)."""
    parser.add_argument("--backend", choices=BACKENDS, default=default)


def security_options(parser: argparse.ArgumentParser, *, server: bool) -> None:
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


def metrics_options(parser: argparse.ArgumentParser, *, default_addr: str = "127.0.0.1") -> None:
    """``--metrics-port`` and ``--metrics-addr``."""
    parser.add_argument("--metrics-port", type=int, default=None,
                        help="serve Prometheus /metrics and health on this port")
    parser.add_argument("--metrics-addr", default=default_addr,
                        help="address /metrics listens on (default %(default)s; it has no "
                             "authentication)")


def server_security(args: argparse.Namespace) -> ServerSecurity | None:
    from stream.security import ServerSecurity

    return None if args.keys is None else ServerSecurity.from_folder(args.keys, args.key)


def client_security(args: argparse.Namespace) -> ClientSecurity | None:
    from stream.security import ClientSecurity

    if args.keys is None:
        return None
    return ClientSecurity.from_folder(args.keys, args.key, server=args.server_key)


def source_options(parser: argparse.ArgumentParser) -> None:
    """What every ``sigstream source`` command takes: the service, the buffer, keys."""
    parser.add_argument("--connect", required=True, help="the service's ingest endpoint")
    parser.add_argument("--seconds", type=float, default=None, help="stop after S seconds")
    parser.add_argument(
        "--buffer-mb", type=float, default=DEFAULT_BUFFER_BYTES / 2**20,
        help="MiB of messages kept while the service is away or slow (default %(default)g; a "
             "restart takes ~20 s); beyond it the oldest are dropped and counted",
    )
    parser.add_argument(
        "--give-up-s", type=float, default=None,
        help="exit with status 1 once messages waited S s with the service taking none "
             "(default: never; the instrument keeps being read and buffered)",
    )
    security_options(parser, server=False)


@contextmanager
def push_link(args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    """The keyword arguments of :func:`stream.sources.run_source` that
    :func:`source_options` parsed, with a ZeroMQ context (CURVE with ``--keys``)."""
    from stream.security import client_context

    if not args.buffer_mb > 0:
        raise ConfigError("--buffer-mb must be > 0")
    context = client_context(client_security(args))
    try:
        yield {"connect": args.connect, "seconds": args.seconds, "context": context,
               "buffer_bytes": max(1, int(args.buffer_mb * 2**20)), "give_up_s": args.give_up_s}
    finally:
        context.term()


def train_options(parser: argparse.ArgumentParser) -> None:
    """What every ``sigstream train`` command takes: the seed and the output folder."""
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None,
                        help="folder (default: the shipped weights)")


def eval_options(parser: argparse.ArgumentParser) -> None:
    """What every ``sigstream eval`` command takes: where the report goes."""
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
