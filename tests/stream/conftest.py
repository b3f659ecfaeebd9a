"""Fixtures shared by the stream tests: a ZeroMQ context, sockets on random 127.0.0.1 ports,
clients of a running service, and an untrained model's weights.

Tests own their sockets (``linger`` 0) and everything is torn down with a timeout, as pyzmq's
own ``tests/conftest.py`` does (:func:`service_client.term_context`). The client classes live
in :mod:`service_client`, importable by the tests (``from service_client import Client``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from service_client import REPO, Client, term_context


@pytest.fixture
def context() -> Iterator[zmq.Context[Any]]:
    """A context for the test's own sockets (made with :func:`sockets`)."""
    ctx: zmq.Context[Any] = zmq.Context()
    yield ctx
    term_context(ctx)


@pytest.fixture
def sockets(context: zmq.Context[Any]) -> Iterator[Callable[..., zmq.Socket[Any]]]:
    """``sockets(zmq.PULL, **options)``: a socket with ``linger`` 0, closed after the test."""
    sockets: list[zmq.Socket[Any]] = []

    def make(kind: int, **options: Any) -> zmq.Socket[Any]:
        sock = context.socket(kind)
        sock.linger = 0
        for name, value in options.items():
            setattr(sock, name, value)
        sockets.append(sock)
        return sock

    yield make
    for sock in sockets:
        sock.close(linger=0)


def _bound(sock: zmq.Socket[Any]) -> tuple[zmq.Socket[Any], str]:
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    return sock, f"tcp://127.0.0.1:{port}"


@pytest.fixture
def pull(sockets: Callable[..., zmq.Socket[Any]]) -> tuple[zmq.Socket[Any], str]:
    """A PULL socket bound to a random port, and its endpoint."""
    return _bound(sockets(zmq.PULL))


@pytest.fixture
def xpub(sockets: Callable[..., zmq.Socket[Any]]) -> tuple[zmq.Socket[Any], str]:
    """An XPUB socket (it tells when a subscription arrives) on a random port, and its
    endpoint."""
    return _bound(sockets(zmq.XPUB))


@pytest.fixture
def clients() -> Iterator[Callable[..., Client]]:
    """``clients(ingest, publish, **options)``: a :class:`service_client.Client`, closed (with
    a timeout) after the test."""
    made: list[Client] = []

    def make(ingest: str, publish: str, **options: Any) -> Client:
        client = Client(ingest, publish, **options)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture(scope="session")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Untrained weights of the model the spectral service runs by default: the service's
    plumbing does not need trained ones."""
    torch = pytest.importorskip("torch")
    from engines.roi.specs import ROI_SPECS
    from stream.paths.spectral.commands import DEFAULT_MODEL

    path = tmp_path_factory.mktemp("weights") / f"roi_{DEFAULT_MODEL}_untrained.pt"
    torch.manual_seed(0)
    torch.save(ROI_SPECS[DEFAULT_MODEL].build().state_dict(), path)
    return path


@pytest.fixture
def tiny_plugin(tmp_path: Path) -> dict[str, str]:
    """The environment of a process in which the ``tiny`` path (:mod:`tiny_path`) is
    installed: an entry point of the ``sigstream.paths`` group pointing at its ``SPEC``."""
    dist = tmp_path / "tiny_path-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-path\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[sigstream.paths]\ntiny = tiny_path:SPEC\n")
    return {"PYTHONPATH": f"{tmp_path}:{Path(__file__).parent}:{REPO}"}
