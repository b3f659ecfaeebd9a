"""Sources: push frames from devices to a service's ingest socket, in wire format v1.

One process can serve many instruments over one PUSH socket: every instrument is a
:class:`~devices.frames.FrameSource` (a spectrometer, an ECG wearable) with its own stream id
and its own ``seq`` (0, 1, 2, ... per stream, so a sink sees gaps), and the instrument due
first is read first. Each message is a data message of the path's input kind whose
``t_ns`` is the capture time of the frame's first sample and, for time series, whose ``fs`` is
the frame's sample rate.

A source rides out a service restart (≈ 20 s) or a network outage: an instrument must be read
on time whether or not anyone listens, so sending never blocks reading. While the service is
unreachable or not keeping up, messages wait in a buffer bounded in bytes (``--buffer-mb``,
default 8 MiB); when it is full the oldest are dropped and counted per stream. ZeroMQ
reconnects by itself, and the buffer goes out oldest first (each stream's ``seq`` order kept)
before the live frames. By default a source never gives up on its own: stopping would lose
everything read from then on, while waiting loses only what overflows the buffer, and every
loss is counted. ``--give-up-s S`` (scripts, tests) stops with exit status 1 once messages have
waited ``S`` seconds with the service taking none.

What no source can see: a message already written to a connection when the service drops it
(ZeroMQ PUSH has no acknowledgement) is lost with that connection; the service's next messages
of that stream show the gap in ``seq``. The summary counts what the source itself did:
``read == sent + dropped + unsent`` for every stream.

Called from the CLI's main thread (``sigstream source ...``, each path's ``sources`` module);
Ctrl-C (SIGINT) or SIGTERM stops a run cleanly, also with no service at all: what is still
buffered is counted as ``unsent``, the summary printed and the socket closed.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO

import zmq
from zmq.utils.monitor import recv_monitor_message

from devices.errors import SigstreamError
from devices.frames import EndOfStream, FrameSource
from stream.cli_options import DEFAULT_BUFFER_BYTES
from stream.wire import data_message, encode

__all__ = [
    "PushReport",
    "SendBuffer",
    "interrupt_on_signals",
    "push_frames",
    "run_source",
    "sim_stream_ids",
]

log = logging.getLogger(__name__)

_HARDWARE_POLL_S = 0.01  # how long one read may block on a source with no clock
_RETRY_S = 0.01  # while messages wait in the buffer: the longest a read may delay a retry
_NOTICE_S = 2.0  # a stall this long is logged (the service is away or not keeping up)
_CLOSE_LINGER_MS = 5000  # at the end, connected: time ZeroMQ gets to deliver its own queue
_CONNECTED = zmq.EVENT_HANDSHAKE_SUCCEEDED
_DISCONNECTED = zmq.EVENT_DISCONNECTED


@dataclass(kw_only=True)
class PushReport:
    """What a push run did, per stream id where it is a dict.

    ``read``: frames read from the instruments (= seqs numbered); ``sent``: messages handed to
    ZeroMQ for a connected service; ``dropped``: read but dropped, oldest first, because the
    buffer was full while the service was away or not keeping up; ``unsent``: still in the
    buffer when the run ended (interrupted, or gave up). ``read == sent + dropped + unsent``
    per stream. ``buffered``: messages that had to wait in the buffer (sent later, dropped or
    unsent); ``peak_buffer_bytes``: the most it held. ``reconnects``: times the connection
    came back after it was lost. ``elapsed_s``: first read to end; ``first_read_s`` /
    ``last_read_s``: monotonic times of the first and last read; ``error``: why the run
    stopped early (``None`` when it ran to its end); ``interrupted``: stopped by Ctrl-C or
    SIGTERM."""

    read: dict[str, int] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    unsent: dict[str, int] = field(default_factory=dict)
    buffered: int = 0
    peak_buffer_bytes: int = 0
    reconnects: int = 0
    elapsed_s: float = 0.0
    first_read_s: float | None = None
    last_read_s: float | None = None
    error: str | None = None
    interrupted: bool = False

    @property
    def total(self) -> int:
        """Messages sent, all streams."""
        return sum(self.sent.values())

    @property
    def total_dropped(self) -> int:
        return sum(self.dropped.values())

    @property
    def total_unsent(self) -> int:
        return sum(self.unsent.values())

    @property
    def rate_hz(self) -> float:
        """Achieved read rate, frames/s over all streams: ``n`` frames of a stream span
        ``n - 1`` periods, so each stream's first read opens the window rather than counting."""
        if self.first_read_s is None or self.last_read_s is None:
            return 0.0
        span = self.last_read_s - self.first_read_s
        intervals = sum(self.read.values()) - sum(1 for n in self.read.values() if n)
        return intervals / span if span > 0 and intervals > 0 else 0.0

    def summary(self, label: str, target_hz: float | None = None) -> str:
        """One line: totals, achieved rate (and target), the count per stream, then what the
        buffer did."""
        rate = self.rate_hz
        target = f", target {target_hz:.1f}/s" if target_hz is not None else ""
        per_stream = " ".join(f"{name}={n}" for name, n in self.sent.items())
        end = " (interrupted)" if self.interrupted else ""
        end += f" (stopped: {self.error})" if self.error else ""
        return (
            f"{label}: sent {self.total} messages in {self.elapsed_s:.2f} s "
            f"({rate:.1f}/s{target}); per stream: {per_stream}; buffered {self.buffered}, "
            f"dropped {self.total_dropped}, unsent {self.total_unsent}, "
            f"reconnects {self.reconnects}{end}"
        )


class SendBuffer:
    """Encoded messages waiting for the service: one FIFO for all streams (so each stream's
    ``seq`` order holds), bounded in bytes. A message that does not fit pushes out the oldest,
    each counted per stream in :attr:`dropped`. Pure bookkeeping, no sockets; one thread (the
    push loop)."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError(f"the buffer must hold at least one byte, got {max_bytes}")
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.peak_bytes = 0
        self.enqueued = 0  # messages ever appended (not those too big to fit at all)
        self.dropped: dict[str, int] = {}
        self._items: deque[tuple[str, list[bytes], int]] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, stream: str, frames: list[bytes]) -> None:
        """Append one message (its frames); drop the oldest until it fits. A message bigger
        than the whole buffer is itself dropped."""
        size = sum(len(f) for f in frames)
        if size > self.max_bytes:
            self._count_drop(stream)
            return
        while self.nbytes + size > self.max_bytes:
            old, _, old_size = self._items.popleft()
            self.nbytes -= old_size
            self._count_drop(old)
        self._items.append((stream, frames, size))
        self.enqueued += 1
        self.nbytes += size
        self.peak_bytes = max(self.peak_bytes, self.nbytes)

    def peek(self) -> tuple[str, list[bytes]]:
        """The oldest message (stream id, frames). Raises ``IndexError`` when empty."""
        stream, frames, _ = self._items[0]
        return stream, frames

    def pop(self) -> None:
        """Remove the oldest message (after it was sent)."""
        _, _, size = self._items.popleft()
        self.nbytes -= size

    def clear(self) -> dict[str, int]:
        """Empty the buffer; returns how many messages of each stream it held."""
        left: dict[str, int] = {}
        for stream, _, _ in self._items:
            left[stream] = left.get(stream, 0) + 1
        self._items.clear()
        self.nbytes = 0
        return left

    def _count_drop(self, stream: str) -> None:
        self.dropped[stream] = self.dropped.get(stream, 0) + 1


def sim_stream_ids(stream: str, streams: int) -> list[str]:
    """Stream ids of ``streams`` simulated instruments: ``stream`` itself for one, else
    ``stream-1 .. stream-N``."""
    if streams < 1:
        raise ValueError(f"streams must be >= 1, got {streams}")
    return [stream] if streams == 1 else [f"{stream}-{i}" for i in range(1, streams + 1)]


@contextmanager
def interrupt_on_signals() -> Iterator[None]:
    """SIGTERM (a supervisor's stop) ends a run like Ctrl-C. SIGINT is made to interrupt too:
    a process started in the background inherits it ignored. Main thread only (elsewhere
    Python cannot install handlers, and this does nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def push_frames(
    sources: Mapping[str, FrameSource],
    *,
    kind: str,
    connect: str,
    header: Mapping[str, Any] | None = None,
    seconds: float | None = None,
    buffer_bytes: int = DEFAULT_BUFFER_BYTES,
    give_up_s: float | None = None,
    sndhwm: int = 100,
    context: zmq.Context | None = None,
) -> PushReport:
    """Open ``sources`` (stream id -> source), push their frames to ``connect`` as ``kind``
    messages (``fs`` from the frame, extra ``header`` keys on every message) until every
    source is exhausted, ``seconds`` have passed, the run gives up or Ctrl-C; close them all.

    Sending never blocks reading: while the service is unreachable or not keeping up, messages
    wait in a buffer of ``buffer_bytes`` (the oldest dropped and counted when it is full) and
    go out, oldest first, once it takes them again; ZeroMQ's own queue in front of it holds
    ``sndhwm`` more messages, which survive a reconnect. ``give_up_s``: stop with
    :attr:`PushReport.error` set when messages waited that long without the service taking
    one (``None``: never). After the last read, what is buffered is still sent (with the same
    give-up rule; Ctrl-C abandons it, counted as ``unsent``).

    Returns a :class:`PushReport`. Raises what ``open()`` raises (missing/corrupt file...).
    """
    if give_up_s is not None and not give_up_s > 0:
        raise ValueError(f"give_up_s must be > 0 or None, got {give_up_s!r}")
    buffer = SendBuffer(buffer_bytes)
    report = PushReport(read={name: 0 for name in sources}, sent={name: 0 for name in sources})
    ctx = context or zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    monitor: zmq.Socket | None = None
    link: _Link | None = None
    try:
        sock.setsockopt(zmq.SNDHWM, sndhwm)
        # Queue to the endpoint even while it is down (ZeroMQ's default): what ZeroMQ holds
        # then survives the reconnect instead of being thrown away with the connection.
        sock.setsockopt(zmq.IMMEDIATE, 0)
        monitor = sock.get_monitor_socket(_CONNECTED | _DISCONNECTED)
        sock.connect(connect)
        link = _Link(sock, monitor, buffer, report, connect, give_up_s)
        with ExitStack() as stack:
            for source in sources.values():
                stack.enter_context(source)
            start = time.monotonic()
            end_ns = None if seconds is None else time.monotonic_ns() + int(seconds * 1e9)
            try:
                with interrupt_on_signals():
                    _push_loop(dict(sources), link, end_ns, kind, dict(header or {}))
                    if report.error is None:
                        link.finish()
            except KeyboardInterrupt:
                report.interrupted = True
            report.elapsed_s = time.monotonic() - start
    finally:
        report.unsent = buffer.clear()
        report.dropped = dict(buffer.dropped)
        report.peak_buffer_bytes = buffer.peak_bytes
        up = link is not None and link.up and report.error is None
        if monitor is not None:
            sock.disable_monitor()
            monitor.close(linger=0)
        # Connected: give ZeroMQ time to deliver its queue. Not: nobody would take it.
        sock.close(linger=_CLOSE_LINGER_MS if up else 0)
        if context is None:
            ctx.term()
    return report


class _Link:
    """The push socket, its connection state (from ZeroMQ's monitor events) and the buffer in
    front of it: everything read goes into the buffer, which is emptied into the socket
    without blocking whenever the service is connected and takes messages."""

    def __init__(self, sock: zmq.Socket, monitor: zmq.Socket, buffer: SendBuffer,
                 report: PushReport, connect: str, give_up_s: float | None) -> None:
        self.sock, self.monitor, self.buffer, self.report = sock, monitor, buffer, report
        self.connect, self.give_up_s = connect, give_up_s
        self.up = False
        self.ever_up = False
        self.lost_at: float | None = None
        self.stalled_since: float | None = None  # messages waiting, none taken since then
        self.noticed = False
        self._classified = 0  # messages appended before this one are counted as waited or not

    @property
    def waiting(self) -> bool:
        return bool(self.buffer)

    def put(self, stream: str, frames: list[bytes]) -> None:
        self.buffer.put(stream, frames)

    def pump(self) -> bool:
        """Follow connection events and send what the service takes; ``False`` once the run
        must give up (``report.error`` is set)."""
        self._events()
        buffer, report = self.buffer, self.report
        now = time.monotonic()
        taken = 0
        while self.up and buffer:
            stream, frames = buffer.peek()
            try:
                self.sock.send_multipart(frames, zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            buffer.pop()
            report.sent[stream] = report.sent.get(stream, 0) + 1
            taken += 1
        # What is left is the newest messages (FIFO): those appended since the last pump and
        # still here are the ones that had to wait.
        oldest_left = buffer.enqueued - len(buffer)
        report.buffered += buffer.enqueued - max(oldest_left, self._classified)
        self._classified = buffer.enqueued
        if not buffer:
            if self.noticed:
                log.info("sending to %s again (%d dropped so far)", self.connect,
                         sum(buffer.dropped.values()))
            self.stalled_since, self.noticed = None, False
            return True
        if taken or self.stalled_since is None:
            self.stalled_since = now
        stalled_s = now - self.stalled_since
        if stalled_s >= _NOTICE_S and not self.noticed:
            self.noticed = True
            what = "the service is not taking messages" if self.up else "no connection"
            log.warning("%s at %s for %.0f s; buffering up to %.1f MiB, dropping the oldest "
                        "beyond", what, self.connect, stalled_s, buffer.max_bytes / 2**20)
        if self.give_up_s is not None and stalled_s > self.give_up_s:
            report.error = (f"no service took a message at {self.connect} for "
                            f"{self.give_up_s:g} s (not running, or not keeping up)")
            return False
        return True

    def finish(self) -> None:
        """After the last read: send what is buffered, waiting for the service as
        :meth:`pump` allows."""
        while self.pump() and self.buffer:
            time.sleep(_RETRY_S)

    def _events(self) -> None:
        while True:
            try:
                event = recv_monitor_message(self.monitor, zmq.NOBLOCK)["event"]
            except zmq.Again:
                return
            if event == _CONNECTED and not self.up:
                self.up = True
                if self.ever_up:
                    self.report.reconnects += 1
                    away = time.monotonic() - (self.lost_at or time.monotonic())
                    log.info("reconnected to %s after %.1f s; %d messages buffered",
                             self.connect, away, len(self.buffer))
                self.ever_up = True
            elif event == _DISCONNECTED and self.up:
                self.up = False
                self.lost_at = time.monotonic()
                log.warning("lost the connection to %s; buffering up to %.1f MiB",
                            self.connect, self.buffer.max_bytes / 2**20)


def _push_loop(
    active: dict[str, FrameSource],
    link: _Link,
    end_ns: int | None,
    kind: str,
    header: dict[str, Any],
) -> None:
    report = link.report
    seq = {name: 0 for name in active}
    while active:
        now = time.monotonic_ns()
        if end_ns is not None and now >= end_ns:
            return
        name, source = min(active.items(), key=lambda item: item[1].next_due_ns or now)
        due = source.next_due_ns
        timeout_s = _HARDWARE_POLL_S if due is None else max(0.0, (due - now) / 1e9)
        if end_ns is not None:
            timeout_s = min(timeout_s, (end_ns - now) / 1e9)
        if link.waiting:
            timeout_s = min(timeout_s, _RETRY_S)
        try:
            frame = source.read(timeout_s)
        except EndOfStream:
            del active[name]
            continue
        if frame is not None:
            msg = data_message(kind, name, seq[name], frame.data, t_ns=frame.t_ns, fs=frame.fs,
                               **header)
            link.put(name, encode(msg))
            report.last_read_s = time.monotonic()
            if report.first_read_s is None:
                report.first_read_s = report.last_read_s
            seq[name] += 1
            report.read[name] += 1
        if not link.pump():
            return


def run_source(
    label: str,
    instruments: Callable[[], Mapping[str, FrameSource]],
    *,
    kind: str,
    connect: str,
    target_hz: float | None = None,
    header: Mapping[str, Any] | None = None,
    seconds: float | None = None,
    buffer_bytes: int = DEFAULT_BUFFER_BYTES,
    give_up_s: float | None = None,
    context: zmq.Context | None = None,
    out: TextIO | None = None,
) -> int:
    """A ``sigstream source`` command: build the ``instruments`` (stream id -> source), push
    their frames as ``kind`` messages (:func:`push_frames`), print a one-line summary headed
    ``label`` (``target_hz``: the messages/s the instruments should make, for the summary).

    Returns the exit status: 0 done, 1 gave up on a missing or stuck service, 2 a bad file or
    argument (one line on stderr), 130 interrupted.
    """
    try:
        report = push_frames(
            instruments(), kind=kind, connect=connect, header=header, seconds=seconds,
            buffer_bytes=buffer_bytes, give_up_s=give_up_s, context=context,
        )
    except (OSError, SigstreamError, ValueError, zmq.ZMQError) as exc:
        print(f"sigstream source: error: {exc}", file=sys.stderr, flush=True)
        return 2
    print(report.summary(label, target_hz), file=out or sys.stdout, flush=True)
    if report.error:
        print(f"sigstream source: error: {report.error}", file=sys.stderr, flush=True)
        return 1
    return 130 if report.interrupted else 0
