"""Sources push valid wire-v1 spectra with contiguous per-stream seq to a PULL socket we own."""

from __future__ import annotations

import io
import re
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zmq

from stream.sources import run_replay, run_spectral_sim, sim_stream_ids
from stream.wire import Message, decode


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def pull(ctx: zmq.Context) -> Iterator[tuple[zmq.Socket, str]]:
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.LINGER, 0)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    yield sock, f"tcp://127.0.0.1:{port}"
    sock.close(linger=0)


def _receive(sock: zmq.Socket, n: int, timeout_s: float = 10.0) -> list[Message]:
    messages = []
    deadline = time.monotonic() + timeout_s
    while len(messages) < n and time.monotonic() < deadline:
        if sock.poll(100):
            messages.append(decode(sock.recv_multipart()))
    # Nothing beyond what was announced.
    assert not sock.poll(100)
    return messages


def test_sim_streams_have_contiguous_seq_and_valid_headers(pull) -> None:
    sock, endpoint = pull
    out = io.StringIO()
    start_ns = time.time_ns()
    status = run_spectral_sim(
        connect=endpoint, rate_hz=400.0, stream="inst", streams=3, count=12, length=128,
        seed=7, out=out,
    )
    assert status == 0
    messages = _receive(sock, 36)
    assert len(messages) == 36
    by_stream: dict[str, list[Message]] = defaultdict(list)
    for msg in messages:
        by_stream[msg.stream].append(msg)
    assert sorted(by_stream) == ["inst-1", "inst-2", "inst-3"]
    for msgs in by_stream.values():
        assert [m.seq for m in msgs] == list(range(12))
        t = [m.t_ns for m in msgs]
        assert t[0] >= start_ns - 10**9 and np.all(np.diff(t) == 2_500_000)
        for m in msgs:
            assert m.header["v"] == 1 and m.kind == "spectrum"
            assert m.header["dtype"] == "float32" and m.header["shape"] == [128]
            assert "fs" not in m.header
            assert m.payload.shape == (128,) and 0.0 <= m.payload.min() <= m.payload.max() <= 1
    # Different instruments, different spectra.
    assert not np.array_equal(by_stream["inst-1"][0].payload, by_stream["inst-2"][0].payload)
    line = out.getvalue().strip()
    assert line.startswith("spectral-sim: sent 36 messages in ")
    assert "inst-1=12 inst-2=12 inst-3=12" in line


def test_sim_stops_after_seconds(pull) -> None:
    sock, endpoint = pull
    out = io.StringIO()
    start = time.monotonic()
    assert run_spectral_sim(connect=endpoint, rate_hz=50.0, seconds=0.3, out=out) == 0
    assert time.monotonic() - start < 3.0
    messages = _receive(sock, 16, timeout_s=2.0)
    # 0.3 s at 50/s: frames due at 0, 20, ..., 280 ms -> 15 (one either way for timing).
    assert 14 <= len(messages) <= 16
    assert [m.seq for m in messages] == list(range(len(messages)))
    assert {m.stream for m in messages} == {"sim-1"}
    achieved = re.search(r"\(([\d.]+)/s, target 50.0/s\)", out.getvalue())
    assert achieved is not None, out.getvalue()
    assert 40.0 <= float(achieved.group(1)) <= 60.0


def test_replay_pushes_every_row_in_order(pull, tmp_path: Path) -> None:
    sock, endpoint = pull
    spectra = np.random.default_rng(1).random((5, 40))
    path = tmp_path / "my run.csv"
    path.write_text("\n".join(",".join(str(v) for v in row) for row in spectra))
    out = io.StringIO()
    assert run_replay(path, connect=endpoint, rate_hz=1000.0, out=out) == 0
    messages = _receive(sock, 5)
    assert [m.seq for m in messages] == [0, 1, 2, 3, 4]
    assert {m.stream for m in messages} == {"my_run"}
    np.testing.assert_allclose(np.stack([m.payload for m in messages]), spectra, rtol=1e-6)
    assert "my_run=5" in out.getvalue()


def test_replay_of_a_missing_file_reports_and_fails(pull, tmp_path: Path, capsys) -> None:
    _, endpoint = pull
    assert run_replay(tmp_path / "absent.npy", connect=endpoint) == 2
    assert "absent.npy" in capsys.readouterr().err


def test_missing_service_is_reported_not_hung(ctx: zmq.Context, capsys) -> None:
    # A port nobody listens on: bind and close to get one that is free. Below the ephemeral
    # range, so that the connect cannot pick the same port as its own source (TCP
    # self-connect, which would make the socket its own peer).
    probe = ctx.socket(zmq.PULL)
    port = probe.bind_to_random_port("tcp://127.0.0.1", min_port=20000, max_port=30000)
    probe.close(linger=0)
    out = io.StringIO()
    start = time.monotonic()
    status = run_spectral_sim(
        connect=f"tcp://127.0.0.1:{port}", rate_hz=100.0, count=5, send_timeout_s=0.3, out=out
    )
    assert status == 1
    assert time.monotonic() - start < 5.0
    assert "no service took a message" in capsys.readouterr().err
    assert "sent 0 messages" in out.getvalue()


def test_bad_stream_id_is_an_argument_error(pull, capsys) -> None:
    _, endpoint = pull
    assert run_spectral_sim(connect=endpoint, stream="has space", count=1) == 2
    assert "stream" in capsys.readouterr().err


def test_stream_ids() -> None:
    assert sim_stream_ids("sim-1", 1) == ["sim-1"]
    assert sim_stream_ids("inst", 3) == ["inst-1", "inst-2", "inst-3"]
    with pytest.raises(ValueError):
        sim_stream_ids("x", 0)
