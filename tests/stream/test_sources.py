"""Sources push valid wire-v1 spectra with contiguous per-stream seq to a PULL socket we own."""

from __future__ import annotations

import io
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import zmq
from service_client import TIMEOUT_S, wait_until

from bench.faults_rig import Answers
from devices.frames import EndOfStream, Frame, FrameSource
from devices.spectrometer import SpectrometerSimConfig, SpectrometerSimulator
from stream.paths.spectral.sources import run_replay, run_spectral_sim
from stream.sources import PushReport, SendBuffer, push_frames, sim_stream_ids
from stream.wire import Message, decode

REPO = Path(__file__).resolve().parents[2]


def _receive(sock: zmq.Socket, n: int, timeout_s: float = TIMEOUT_S) -> list[Message]:
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
    assert run_spectral_sim(connect=endpoint, rate_hz=50.0, seconds=0.3, out=out) == 0
    sent = re.search(r"sent (\d+) messages", out.getvalue())
    assert sent is not None, out.getvalue()
    messages = _receive(sock, int(sent.group(1)))
    # 0.3 s at 50/s: frames due at 0, 20, ..., 280 ms -> 15 (one more for rounding). A loaded
    # machine may read fewer before the time is up, never more; each one sent arrives.
    assert 1 <= len(messages) == int(sent.group(1)) <= 16
    assert [m.seq for m in messages] == list(range(len(messages)))
    assert {m.stream for m in messages} == {"sim-1"}
    assert re.search(r"\([\d.]+/s, target 50.0/s\)", out.getvalue()), out.getvalue()


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


def _unused_endpoint() -> str:
    """A port nobody listens on. Below the ephemeral range, so that the connect cannot pick
    the same port as its own source (TCP self-connect, which would make the socket its own
    peer); found with a plain socket, whose close (unlike ZeroMQ's) is done on return."""
    rng = random.Random()
    while True:
        port = rng.randrange(20000, 30000)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return f"tcp://127.0.0.1:{port}"


def _bind(sock: zmq.Socket, endpoint: str) -> None:
    """Bind, waiting for a closed ZeroMQ socket on the same port to let go of it."""
    deadline = time.monotonic() + 10
    while True:
        try:
            sock.bind(endpoint)
            return
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EADDRINUSE or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_missing_service_gives_up_only_when_asked(capsys) -> None:
    out = io.StringIO()
    status = run_spectral_sim(
        connect=_unused_endpoint(), rate_hz=100.0, count=5, give_up_s=0.3, out=out
    )
    assert status == 1  # it returned: it gave up
    assert "no service took a message" in capsys.readouterr().err
    # Read, buffered, never sent: counted, not lost silently.
    assert "sent 0 messages" in out.getvalue()
    assert "buffered 5, dropped 0, unsent 5, reconnects 0" in out.getvalue()


def test_no_service_at_all_ends_cleanly_on_sigterm() -> None:
    # A real `sigstream source` process with no service and no give-up: it keeps reading and
    # buffering (1 KiB: the oldest dropped) until SIGTERM, then reports and exits 130.
    cmd = [sys.executable, "-m", "stream.cli", "source", "spectral-sim",
           "--connect", _unused_endpoint(), "--rate", "200", "--length", "64",
           "--buffer-mb", str(1 / 1024)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    lines: list[str] = []
    noticed = threading.Event()

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "no connection at" in line:
                noticed.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        # It says so after a 2 s stall, and keeps running.
        assert noticed.wait(60), "".join(lines)
        assert proc.poll() is None, "".join(lines)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 130, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(10)
    assert proc.stdout is not None
    stdout, stderr = proc.stdout.read(), "".join(lines)
    found = re.search(r"sent 0 messages .*; buffered (\d+), dropped (\d+), unsent (\d+), "
                      r"reconnects 0 \(interrupted\)", stdout)
    assert found, stdout + stderr
    buffered, dropped, unsent = map(int, found.groups())
    assert dropped > 0 and 0 < unsent <= 1024 // (64 * 4)
    assert buffered == dropped + unsent
    assert "Traceback" not in stderr


def test_send_buffer_is_bounded_in_bytes_and_drops_the_oldest() -> None:
    buffer = SendBuffer(100)
    for _ in range(3):
        buffer.put("a", [b"h", bytes(29)])  # 30 bytes each
    buffer.put("b", [bytes(30)])  # 120 > 100: the oldest "a" goes
    assert (len(buffer), buffer.nbytes, buffer.dropped) == (3, 90, {"a": 1})
    buffer.put("b", [bytes(101)])  # bigger than the whole buffer: dropped itself
    assert (len(buffer), buffer.dropped) == (3, {"a": 1, "b": 1})
    assert buffer.peek()[0] == "a"
    buffer.pop()
    assert buffer.nbytes == 60 and buffer.peak_bytes == 90
    assert buffer.clear() == {"a": 1, "b": 1}
    assert (len(buffer), buffer.nbytes) == (0, 0)
    with pytest.raises(ValueError):
        SendBuffer(0)


def test_bad_stream_id_is_an_argument_error(pull, capsys) -> None:
    _, endpoint = pull
    assert run_spectral_sim(connect=endpoint, stream="has space", count=1) == 2
    assert "stream" in capsys.readouterr().err


def test_stream_ids() -> None:
    assert sim_stream_ids("sim-1", 1) == ["sim-1"]
    assert sim_stream_ids("inst", 3) == ["inst-1", "inst-2", "inst-3"]
    with pytest.raises(ValueError):
        sim_stream_ids("x", 0)


def _pull_until(sock: zmq.Socket, seqs: dict[str, list[int]], done: Callable[[], bool],
                timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, {k: len(v) for k, v in seqs.items()}
        if sock.poll(50):
            msg = decode(sock.recv_multipart())
            seqs[msg.stream].append(msg.seq)


def test_a_source_reconnects_resends_and_counts_drops(
        context: zmq.Context, sockets: Callable[..., zmq.Socket]) -> None:
    # The receiver goes away for a while and comes back on the same port: what was read
    # meanwhile arrives (oldest dropped beyond the buffer, counted), in order, once each.
    endpoint = _unused_endpoint()
    stop = threading.Event()
    names = ("a", "b")
    sources = {
        name: _Until(SpectrometerSimulator(SpectrometerSimConfig(
            rate_hz=100.0, length=128, seed=1, instrument=i)), stop)
        for i, name in enumerate(names)
    }
    buffer_bytes = 20 * 700  # ~20 messages of 128 float32 (+ header)
    reports: list[PushReport] = []
    pusher = threading.Thread(target=lambda: reports.append(push_frames(
        sources, kind="spectrum", connect=endpoint, buffer_bytes=buffer_bytes,
        give_up_s=60.0, context=context)), daemon=True)
    seqs: dict[str, list[int]] = defaultdict(list)
    first = sockets(zmq.PULL)
    _bind(first, endpoint)
    pusher.start()
    try:
        _pull_until(first, seqs, lambda: all(len(seqs[n]) >= 20 for n in names))
        first.close(linger=0)
        at_close = {n: sources[n].inner.frames_read for n in names}
        # Away until 200 more are read: more than ZeroMQ's queue (100) and the buffer (~20) hold.
        wait_until(lambda: all(sources[n].inner.frames_read >= at_close[n] + 100 for n in names),
                   "the source read on while the receiver was away")
        before = {n: list(seqs[n]) for n in names}
        second = sockets(zmq.PULL)
        _bind(second, endpoint)
        _pull_until(second, seqs, lambda: all(len(seqs[n]) >= len(before[n]) + 40
                                              for n in names))
        stop.set()
        pusher.join(30)
        assert reports, "the source did not end"
        report = reports[0]
        # The newest message is never dropped (the oldest are), and each arrives in order.
        _pull_until(second, seqs, lambda: all(seqs[n][-1] == report.read[n] - 1
                                              for n in names))
        _pull_until(second, seqs, lambda: not second.poll(100))
        second.close()
    finally:
        stop.set()
        pusher.join(10)
    assert report.error is None and report.reconnects == 1 and report.unsent == {}
    assert report.buffered > 0 and 0 < report.peak_buffer_bytes <= buffer_bytes
    for name in names:
        got, n, dropped = seqs[name], report.read[name], report.dropped.get(name, 0)
        assert n == report.sent[name] + dropped and dropped > 0
        assert got == sorted(set(got)), f"{name}: out of order or twice"
        # Lost unseen: only what was on the first connection when its receiver closed, the
        # seqs right after the last one it took (how many depends on the machine's load).
        in_transit = n - len(got) - dropped
        missing = set(range(n)) - set(got)
        assert in_transit >= 0 and min(missing) > max(before[name]), (name, in_transit, report)
        assert set(range(max(before[name]) + 1, max(before[name]) + 1 + in_transit)) <= missing


# ---------------------------------------------------------------------------------------------
# A service restart under a running source (real service processes)


class _Until(FrameSource):
    """A simulated spectrometer that ends once ``stop`` is set."""

    def __init__(self, inner: FrameSource, stop: threading.Event) -> None:
        super().__init__()
        self.inner, self.stop = inner, stop

    @property
    def next_due_ns(self) -> int | None:
        return self.inner.next_due_ns

    def _open(self) -> None:
        self.inner.open()

    def _read(self, timeout_s: float | None) -> Frame | None:
        if self.stop.is_set():
            raise EndOfStream
        return self.inner.read(timeout_s)

    def _close(self) -> None:
        self.inner.close()


def _free_port() -> int:
    return int(_unused_endpoint().rsplit(":", 1)[1])


@pytest.mark.slow  # two service starts
def test_a_source_rides_out_a_service_restart(context: zmq.Context, weights: Path) -> None:
    from stream.service import Service, ServiceConfig

    def config(publish_port: int) -> ServiceConfig:
        return ServiceConfig(
            path="spectral", ingest=ingest, publish=f"tcp://127.0.0.1:{publish_port}",
            backend="eager", weights=weights, max_batch=8, max_wait_us=1000,
            queue_depth=256, stats_interval_s=0.1, stop_timeout_s=20.0,
            deadline_ms=60_000,  # about what arrives, not how fresh: results, not `expired`
        )

    ingest = f"tcp://127.0.0.1:{_free_port()}"
    ports = (_free_port(), _free_port())
    names = ("inst-1", "inst-2")
    stop = threading.Event()
    sources = {
        name: _Until(SpectrometerSimulator(SpectrometerSimConfig(
            rate_hz=40.0, length=512, seed=3, instrument=i)), stop)
        for i, name in enumerate(names)
    }
    # 64 KiB: ~30 spectra of 2.1 KB, far less than the outage (a service start, seconds at
    # 80 messages/s), so the buffer both delivers after the restart and drops.
    buffer_bytes = 64 << 10
    reports: list[PushReport] = []
    # Subscribed before the service binds: no probe, a quick reconnect.
    first = Answers(f"tcp://127.0.0.1:{ports[0]}")
    second: Answers | None = None
    pusher = threading.Thread(target=lambda: reports.append(push_frames(
        sources, kind="spectrum", connect=ingest, buffer_bytes=buffer_bytes, give_up_s=120.0,
        context=context)), daemon=True)
    old = Service(config(ports[0]))
    new: Service | None = None
    try:
        old.start()
        pusher.start()
        wait_until(lambda: all(first.count(n) >= 20 for n in names), "the first service answers")
        old.stop()
        at_stop = {n: sources[n].inner.frames_read for n in names}
        # Away until 200 more are read: more than ZeroMQ's queue (100) and the buffer (~30).
        wait_until(lambda: all(sources[n].inner.frames_read >= at_stop[n] + 100 for n in names),
                   "the source read on while no service was up")
        second = Answers(f"tcp://127.0.0.1:{ports[1]}")
        new = Service(config(ports[1]))
        new.start()
        wait_until(lambda: all(second.count(n) >= 40 for n in names), "the new service answers")
        stop.set()
        pusher.join(60)
        assert reports, "the source did not end"
        report = reports[0]
        read = {n: report.read[n] for n in names}

        def caught_up(service: Service, answers: Answers) -> bool:
            # The newest message is never dropped; once it is answered, everything the
            # service took in is answered or counted, and this subscriber holds each answer.
            summary = service.summary()
            return all(read[n] - 1 in answers.answered(n) and n in summary
                       and summary[n].unexplained == 0
                       and answers.count(n) == summary[n].delivered + summary[n].errors_total
                       for n in names)

        wait_until(lambda: caught_up(new, second), "the last answers")
        new.stop()
    finally:
        stop.set()
        first.close()
        if second is not None:
            second.close()
        old.stop()
        if new is not None:
            new.stop()
        pusher.join(10)

    assert report.error is None and not report.interrupted
    assert report.reconnects == 1, report
    assert report.unsent == {}
    assert report.buffered > 0 and report.peak_buffer_bytes <= buffer_bytes
    assert second is not None and new is not None
    summary = new.summary()
    for name in names:
        n = read[name]
        assert n == report.sent[name] + report.dropped.get(name, 0)
        assert report.dropped.get(name, 0) > 0, "the outage must overflow the buffer"
        got_first, got_second = first.answered(name), second.answered(name)
        assert all(len(v) == 1 for v in (*got_first.values(), *got_second.values())), (
            f"{name}: a seq answered twice")
        before, after = sorted(got_first), sorted(got_second)
        answered = before + after
        assert len(answered) == len(set(answered)), f"{name}: a seq answered twice"
        # The new service answers only what the old one never saw.
        assert not before or not after or max(before) < min(after)
        missing = set(range(n)) - set(answered)
        assert not missing or min(missing) > max(before), "lost while both were up"
        # Every seq is answered or dropped by the source, but for the messages on the wire
        # when the old service closed its socket (no acknowledgement tells the source of
        # them): the seqs right after the old service's last, as many as the load made.
        in_transit = len(missing) - report.dropped.get(name, 0)
        assert in_transit >= 0, (name, in_transit, report)
        assert set(range(max(before) + 1, max(before) + 1 + in_transit)) <= missing
        s = summary[name]
        assert (s.received, s.unexplained) == (len(after), 0)
