"""The codec link: ``sigstream run codec-tx`` (capture, encode, send) and ``codec-rx`` (receive,
jitter buffer, decode, play).

::

    mic / WAV --blocks--> StreamEncoder --frame packets--> PUSH ==tcp==> PULL --> jitter buffer
                                                                            --> StreamDecoder
                                                                            --> speaker / WAV

One packet per codec frame, on the wire format v1 (``docs/protocol.md``, "The codec link"):
header ``kind: "codec"``, ``stream``, ``seq`` (+1 per frame), ``t_ns`` (capture time of the
frame's first sample), ``dtype: "uint8"``, ``shape: [bytes]``, ``fs``, and what the receiver
needs to decode it: ``codec``, ``model`` (codec key and weights hash), ``step``, ``kbps``,
``frame``, ``hop``. A last message with ``end: true`` and no bytes ends the stream.

Sender: a packet the socket cannot take at once (receiver gone, high-water mark reached) is
dropped and counted, never queued without bound: late audio is useless. A microphone that
disappears is reopened every second until the sender is stopped; the receiver conceals the gap.

Receiver: it plays one named stream (``stream``); with keys (:mod:`stream.security`) only
listed senders can connect at all (a refused connection attempt is counted ``unauthenticated``)
and ``sender`` pins the one key whose packets are played (another key's are ``unauthenticated``
too); a packet of another stream is ``wrong_stream``. Every message is validated; a bad one is
counted by reason (``errors``) and logged, never played. Playout runs on its own clock: frame
``seq`` is due ``jitter_ms`` after the first packet's arrival plus ``(seq - seq0) * hop / fs``.
At its deadline a frame is decoded if its packet is there, else concealed (``concealed``; a
packet arriving after its deadline is ``late``; a second copy is ``duplicate``; packets out of
order within the buffer are simply played in order). Nothing received for :data:`IDLE_S`
pauses playout; the next packet restarts its clock (``pauses``), and a sender restart (``seq``
far behind) or a jump far ahead starts a new stream (``resyncs``: new decoder state). A backlog
deeper than the jitter buffer plus :data:`SLACK_FRAMES` (the receiver started late, or a stall
ended in a burst) is not kept as extra latency: the oldest frames are skipped (``skipped``)
down to the buffer's depth.

Latency of each played frame: wall clock when its samples go to the sink (plus the sound
device's output latency) minus the frame's capture time ``t_ns``; sender and receiver on one
machine share the clock, across machines they must be NTP-synchronised for this figure.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import resource
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import zmq
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from devices.audio import CODEC_FS, WavSink, WavSource
from devices.frames import DeviceError, EndOfStream, FrameSource
from engines.codec.codec import Codec, StreamDecoder, load_codec
from engines.registry import CODEC_LINK_MAX_BATCH
from stream.errors import WireError
from stream.metrics import LATENCY_BUCKETS_S, Histogram, MetricsServer
from stream.security import (
    ClientSecurity,
    RefusedConnections,
    ServerGuard,
    ServerSecurity,
    check_bind,
    secure_server,
)
from stream.sources import interrupt_on_signals
from stream.wire import WireLimits, data_message, decode, encode

__all__ = [
    "IDLE_S",
    "CodecReceiver",
    "LinkStats",
    "RxConfig",
    "TxConfig",
    "run_codec_rx",
    "run_codec_tx",
]

log = logging.getLogger(__name__)

#: Receiver: silence from the sender this long pauses playout until the next packet.
IDLE_S = 0.5
#: Receiver: a packet this far (seconds of audio) behind or ahead of playout restarts it.
RESYNC_S = 2.0
#: Receiver: frames buffered beyond the jitter buffer's depth before the oldest are skipped.
SLACK_FRAMES = 2
MAX_PACKET_BYTES = 8192
_LIMITS = WireLimits(max_payload_bytes=MAX_PACKET_BYTES, max_header_bytes=4096)
_BLOCK_MS = 20.0  # capture block: 320 samples


class Sink(Protocol):
    def write(self, block: np.ndarray) -> None: ...
    def close(self) -> None: ...


@dataclass
class LinkStats:
    """Counters of one end of a link; ``snapshot()`` is the JSON report."""

    role: str
    counters: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    latency: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS_S))
    latency_ms: list[float] = field(default_factory=list)
    device: dict[str, Any] = field(default_factory=dict)
    cpu_ready_s: float = 0.0  # process CPU time once the engines were loaded

    def ready(self) -> None:
        self.cpu_ready_s = time.process_time()

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def error(self, code: str, reason: str, n: int = 1) -> None:
        first = code not in self.errors
        self.errors[code] = self.errors.get(code, 0) + n
        (log.warning if first else log.debug)("codec-%s: %s: %s", self.role, code, reason)

    def observe_latency(self, seconds: float) -> None:
        self.latency.observe(seconds)
        if len(self.latency_ms) < 1_000_000:
            self.latency_ms.append(1000.0 * seconds)

    def snapshot(self) -> dict[str, Any]:
        lat = np.asarray(self.latency_ms)
        cpu = time.process_time()
        return {
            "role": self.role,
            "cpu_s": round(cpu, 3),
            "cpu_s_streaming": round(cpu - self.cpu_ready_s, 3),
            "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            **dict(sorted(self.counters.items())),
            "errors": dict(sorted(self.errors.items())),
            "device": self.device,
            "latency_ms": None if not lat.size else {
                "p50": round(float(np.percentile(lat, 50)), 2),
                "p99": round(float(np.percentile(lat, 99)), 2),
                "max": round(float(lat.max()), 2), "count": int(lat.size)},
        }


class _LinkCollector(Collector):
    """``/metrics`` of one link end: ``sigstream_codec_<counter>_total``, errors by code, and
    the capture-to-playout latency histogram (receiver)."""

    def __init__(self, stats: LinkStats, lock: threading.Lock) -> None:
        self._stats, self._lock = stats, lock

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Any:
        with self._lock:
            counters = dict(self._stats.counters)
            errors = dict(self._stats.errors)
            device = {k: v for k, v in self._stats.device.items() if isinstance(v, int)}
            hist = Histogram.from_snapshot(LATENCY_BUCKETS_S, self._stats.latency.snapshot())
        role = self._stats.role
        for name, value in sorted({**counters, **device}.items()):
            family = CounterMetricFamily(f"sigstream_codec_{name}",
                                         f"codec-{role}: {name.replace('_', ' ')}.")
            family.add_metric([], value)
            yield family
        errs = CounterMetricFamily("sigstream_codec_errors", f"codec-{role}: bad messages.",
                                   labels=["code"])
        for code, n in sorted(errors.items()):
            errs.add_metric([code], n)
        yield errs
        if hist.count:
            lat = HistogramMetricFamily("sigstream_codec_latency_seconds",
                                        "Capture to playout of a frame, seconds.")
            lat.add_metric([], hist.buckets(), hist.sum)
            yield lat


def _serve_metrics(stats: LinkStats, lock: threading.Lock,
                   port: int | None, addr: str) -> MetricsServer | None:
    if port is None:
        return None
    server = MetricsServer(_LinkCollector(stats, lock), port=port, addr=addr)
    server.start()
    log.info("metrics on http://%s:%s/metrics", addr, server.port)
    return server


def _release(sock: zmq.Socket[Any], server: MetricsServer | None, codec: Codec | None,
             guard: ServerGuard | None = None) -> None:
    """Close a link end's socket (and its ZAP guard and context), metrics server and, if owned,
    codec."""
    context = sock.context
    sock.close()
    if guard is not None:
        guard.close()
    context.term()
    if server is not None:
        server.close()
    if codec is not None:
        codec.close()


def _write_report(path: Path | None, report: dict[str, Any]) -> None:
    if path is not None:
        path.write_text(json.dumps(report, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------
# Sender


@dataclass(frozen=True, kw_only=True)
class TxConfig:
    """``input``: ``"mic"`` or an audio file; ``device``: sound device (index or name part);
    ``device_latency``: PortAudio's ``"high"`` (safe from overruns) or ``"low"`` (less delay);
    ``start_at``: Unix time to start capturing (many senders started together);
    ``security``: CURVE keys of the link (:mod:`stream.security`); ``metrics_addr``: where
    ``/metrics`` listens when ``metrics_port`` is set."""

    input: str
    connect: str
    stream: str = "mic"
    codec: str = "wideband"
    kbps: float = 16.0
    backend: str = "auto"
    device: str | None = None
    device_latency: Literal["high", "low"] = "high"
    seconds: float | None = None
    start_at: float | None = None
    cache_dir: Path | None = None
    metrics_port: int | None = None
    metrics_addr: str = "127.0.0.1"
    report: Path | None = None
    hwm: int = 64
    security: ClientSecurity | None = None


def _open_source(cfg: TxConfig, block: int) -> FrameSource:
    if cfg.input == "mic":
        from devices.sound import Microphone

        return Microphone(cfg.device, fs=CODEC_FS, block=block, latency=cfg.device_latency)
    return WavSource(cfg.input, block=block, fs=CODEC_FS)  # a file plays like a microphone


def _load(name: str, backend: str, cache_dir: Path | None) -> Codec:
    return load_codec(name, backend=backend, cache_dir=cache_dir, max_batch=CODEC_LINK_MAX_BATCH)


def run_codec_tx(cfg: TxConfig, *, codec: Codec | None = None) -> int:
    """Capture, encode and send until the input ends, ``seconds`` pass or SIGINT/SIGTERM."""
    own = codec is None
    codec = codec or _load(cfg.codec, cfg.backend, cfg.cache_dir)
    stats, lock = LinkStats("tx"), threading.Lock()
    stats.ready()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, cfg.hwm)
    sock.setsockopt(zmq.LINGER, 2000)
    if cfg.security is not None:
        cfg.security.apply(sock)
    sock.connect(cfg.connect)
    server = _serve_metrics(stats, lock, cfg.metrics_port, cfg.metrics_addr)
    try:
        _tx_loop(cfg, codec, sock, stats, lock)
    finally:
        _release(sock, server, codec if own else None)
    report = stats.snapshot()
    log.info("codec-tx: %s", json.dumps(report))
    _write_report(cfg.report, report)
    return 0


def _tx_loop(cfg: TxConfig, codec: Codec, sock: zmq.Socket[Any], stats: LinkStats,
             lock: threading.Lock) -> None:
    c = codec.config
    block = round(_BLOCK_MS * CODEC_FS / 1000)
    encoder = codec.stream_encoder(cfg.kbps)
    common: dict[str, Any] = {
        "fs": float(CODEC_FS), "codec": codec.key, "model": codec.model_id,
        "step": encoder.coder.step, "kbps": float(cfg.kbps), "frame": c.frame, "hop": c.hop}
    seq = 0
    t0_ns: int | None = None  # capture time of the first sample of the current encoder
    deadline = None if cfg.seconds is None else time.monotonic() + cfg.seconds

    def send(packets: Sequence[bytes]) -> None:
        nonlocal seq
        first = encoder.frames - len(packets)
        for i, packet in enumerate(packets):
            # Frame k starts at input sample k * hop - overlap (frame 0 with a lead-in of
            # zeros): the first sample it makes final, so latency is measured from there.
            start = max((first + i) * c.hop - c.overlap, 0)
            t_ns = (t0_ns or 0) + round(start * 1e9 / CODEC_FS)
            msg = data_message("codec", cfg.stream, seq, np.frombuffer(packet, np.uint8),
                               t_ns=t_ns, **common)
            try:
                sock.send_multipart(encode(msg), zmq.NOBLOCK)
                with lock:
                    stats.count("packets_sent")
                    stats.count("bytes_sent", len(packet))
            except zmq.Again:
                with lock:
                    stats.count("packets_dropped")
            seq += 1

    source: FrameSource | None = None
    captured = False  # a device that never worked is an error; one that went away is retried
    try:
        # Ctrl-C or SIGTERM ends the capture; what was captured is still flushed and sent.
        with contextlib.suppress(KeyboardInterrupt), interrupt_on_signals():
            if cfg.start_at is not None:
                time.sleep(max(0.0, cfg.start_at - time.time()))
            while deadline is None or time.monotonic() < deadline:
                if source is None:
                    try:
                        source = _open_source(cfg, block)
                        source.open()
                        log.info("codec-tx: capturing from %s, %s at %g kbps to %s",
                                 getattr(source, "device_name", None) or cfg.input, codec.model_id,
                                 cfg.kbps, cfg.connect)
                    except DeviceError as exc:
                        if not captured:
                            raise
                        source = None
                        with lock:
                            stats.error("device", str(exc))
                        time.sleep(1.0)
                        continue
                try:
                    frame = source.read(timeout_s=0.1)
                except EndOfStream:
                    break
                except DeviceError as exc:
                    # The microphone went away: restart the encoder and reopen it (rx conceals).
                    with lock:
                        stats.error("device", str(exc))
                        stats.count("device_lost")
                    source.close()
                    source = None
                    send(encoder.flush())
                    encoder = codec.stream_encoder(cfg.kbps)
                    t0_ns = None
                    continue
                if frame is None:
                    continue
                captured = True
                samples = np.asarray(frame.data, np.float32).reshape(-1)
                if t0_ns is None:
                    t0_ns = frame.t_ns
                with lock:
                    stats.count("samples_captured", samples.size)
                    stats.count("clipped_samples", int(np.count_nonzero(np.abs(samples) >= 0.999)))
                if not np.isfinite(samples).all():
                    with lock:
                        stats.error("nan", "NaN/Inf samples from the input replaced by silence")
                    samples = np.nan_to_num(samples, nan=0.0, posinf=0.0, neginf=0.0)
                send(encoder.push(samples))
        send(encoder.flush())
    finally:
        # The end marker first: closing a sound device can take a while.
        end = data_message("codec", cfg.stream, seq, np.zeros(0, np.uint8), end=True, **common)
        try:
            sock.send_multipart(encode(end), zmq.NOBLOCK)
        except zmq.Again:
            stats.count("packets_dropped")
        if source is not None:
            with lock:
                stats.device = getattr(source, "stats", lambda: {})()
            source.close()


# ---------------------------------------------------------------------------------------------
# Receiver


@dataclass(frozen=True, kw_only=True)
class RxConfig:
    """``output``: ``"speaker"`` or a WAV path; ``stream``: the one to play; ``until_end``: stop
    after the stream's end marker (default for a file output). ``security``: CURVE keys (only
    listed senders connect) and ``sender``: the one sender key (z85) to play; without keys a
    ``bind`` reachable from the network is refused unless ``insecure``."""

    bind: str = "tcp://127.0.0.1:5557"
    output: str = "speaker"
    codec: str = "wideband"
    backend: str = "auto"
    device: str | None = None
    device_latency: Literal["high", "low"] = "high"
    stream: str = "mic"
    jitter_ms: float = 40.0
    seconds: float | None = None
    until_end: bool | None = None
    cache_dir: Path | None = None
    metrics_port: int | None = None
    metrics_addr: str = "127.0.0.1"
    report: Path | None = None
    security: ServerSecurity | None = None
    sender: bytes | None = None
    insecure: bool = False


class CodecReceiver:
    """Validates packets, holds them in a jitter buffer and plays them out on a clock.

    :meth:`receive` takes a raw multipart message; :meth:`play_due` plays every frame whose
    deadline has passed into the sink. One thread calls both. ``stream``: the one stream played;
    ``sender``: when set, the one authenticated sender key (z85 text) whose packets play.
    """

    def __init__(self, codec: Codec, sink: Sink, *, stream: str, sender: str | None = None,
                 jitter_ms: float = 40.0, output_latency_s: Callable[[], float] = lambda: 0.0,
                 stats: LinkStats | None = None, lock: threading.Lock | None = None) -> None:
        self.codec = codec
        self.sink = sink
        self.stream = stream
        self.sender = sender
        self.jitter_s = jitter_ms / 1000.0
        self.stats = stats or LinkStats("rx")
        self._lock = lock or threading.Lock()
        self._output_latency_s = output_latency_s
        self._hop_s = codec.config.hop / CODEC_FS
        self._resync_frames = int(RESYNC_S / self._hop_s)
        self._max_ahead = math.ceil(self.jitter_s / self._hop_s) + 1 + SLACK_FRAMES
        self._buffer: dict[int, tuple[bytes, int, float]] = {}
        self._decoder: StreamDecoder | None = None
        self._next: int | None = None        # next seq to play
        self._base = 0.0                      # monotonic deadline of seq `_base_seq`
        self._base_seq = 0
        self._last_arrival = 0.0
        self._end_seq: int | None = None
        self.ended = False

    # -- input -----------------------------------------------------------------------------
    def receive(self, frames: Sequence[Any], now: float | None = None,
                peer: str | None = None) -> None:
        """Take one message; ``peer``: its sender's authenticated key (z85), if any."""
        now = time.monotonic() if now is None else now
        with self._lock:
            # Every message is counted, then played or counted again as an end marker or an
            # error by reason: messages == packets_received + end_markers + sum(errors).
            self.stats.count("messages")
            try:
                self._receive(frames, now, peer)
            except Exception as exc:  # no packet may stop the link
                log.exception("codec-rx: a message could not be handled")
                self.stats.error("internal", f"{type(exc).__name__}")

    def _receive(self, frames: Sequence[Any], now: float, peer: str | None) -> None:
        stats = self.stats
        try:
            msg = decode(frames, limits=_LIMITS)
        except WireError as exc:
            stats.error(exc.code, str(exc))
            return
        h = msg.header
        if msg.kind != "codec":
            stats.error("wrong_kind", f"kind {msg.kind!r}, this receiver plays 'codec'")
            return
        if self.sender is not None and peer != self.sender:
            stats.error("unauthenticated", f"stream {msg.stream!r} from key {peer}, not the "
                        "sender's")
            return
        if msg.stream != self.stream:
            stats.error("wrong_stream", f"stream {msg.stream!r}; playing {self.stream!r}")
            return
        if h.get("end") is True:
            stats.count("end_markers")
            self._end_seq = int(h["seq"])
            return
        problem = self._check(h)
        if problem:
            stats.error(*problem)
            return
        if msg.payload.dtype != np.uint8 or msg.payload.ndim != 1:
            stats.error("bad_dtype", f"payload must be 1-D uint8, got {h['dtype']}{h['shape']}")
            return
        seq = int(h["seq"])
        packet = msg.payload.tobytes()
        if self._next is None or abs(seq - self._next) > self._resync_frames:
            if self._next is not None:  # the sender restarted, or jumped: a new stream
                stats.count("resyncs")
            self._start(seq, now, float(h["step"]))
        else:
            if now - self._last_arrival > IDLE_S:  # the sender paused: restart the clock only
                stats.count("pauses")
                self._base_seq, self._base = self._next, now + self.jitter_s
            if float(h["step"]) != self._decoder.coder.step:  # type: ignore[union-attr]
                self._decoder.coder = self.codec.coder(  # type: ignore[union-attr]
                    step=float(h["step"]))
        self._last_arrival = now
        stats.count("packets_received")
        stats.count("bytes_received", len(packet))
        assert self._next is not None
        if seq < self._next:
            stats.count("late")
        elif seq in self._buffer:
            stats.count("duplicate")
        else:
            self._buffer[seq] = (packet, int(h["t_ns"]), now)

    def _check(self, h: dict[str, Any]) -> tuple[str, str] | None:
        c = self.codec.config
        if h.get("codec") != self.codec.key or h.get("model") != self.codec.model_id:
            return ("codec_mismatch", f"sender codec {h.get('codec')!r} model "
                    f"{h.get('model')!r}; this receiver has {self.codec.model_id!r}")
        if h.get("fs") != CODEC_FS or h.get("frame") != c.frame or h.get("hop") != c.hop:
            return ("bad_format", f"fs/frame/hop {h.get('fs')}/{h.get('frame')}/{h.get('hop')}"
                    f" != {CODEC_FS}/{c.frame}/{c.hop}")
        step = h.get("step")
        if not isinstance(step, float):
            return ("bad_step", f"step must be a float, got {step!r}")
        try:
            self.codec.coder(step=step)
        except ValueError as exc:
            return ("bad_step", str(exc))
        if not isinstance(h.get("t_ns"), int):
            return ("bad_header", "t_ns missing")
        return None

    def _start(self, seq: int, now: float, step: float) -> None:
        if self._decoder is not None:
            self._emit(self._decoder.flush(), None)
        self._decoder = self.codec.stream_decoder(step)
        # Only what belongs to the new stream's window stays: a packet from far away (a
        # hostile seq) must not hold the buffer or the playout clock.
        self._buffer = {s: v for s, v in self._buffer.items()
                        if seq <= s <= seq + self._resync_frames}
        self._next = self._base_seq = seq
        self._base = now + self.jitter_s

    # -- output ----------------------------------------------------------------------------
    def play_due(self, now: float | None = None) -> int:
        """Play every frame whose deadline has passed; returns how many."""
        now = time.monotonic() if now is None else now
        played = 0
        with self._lock:
            while self._next is not None and not self.ended:
                if self._end_seq is not None and self._next >= self._end_seq:
                    self._finish()
                    break
                if now - self._last_arrival > IDLE_S and not self._buffer:
                    break  # sender silent: pause until its next packet
                due = self._base + (self._next - self._base_seq) * self._hop_s
                if due > now:
                    break
                self._skip_backlog()
                self._play_one()
                played += 1
        return played

    def next_due(self) -> float | None:
        """Monotonic time of the next deadline (``None``: nothing to play)."""
        with self._lock:
            if self._next is None or self.ended:
                return None
            return self._base + (self._next - self._base_seq) * self._hop_s

    def _skip_backlog(self) -> None:
        assert self._next is not None
        newest = max(self._buffer, default=self._next)
        excess = newest - self._next + 1 - self._max_ahead
        if excess > 0:
            skip_to = self._next + excess  # never a loop over the seqs: they can be far apart
            self._buffer = {s: v for s, v in self._buffer.items() if s >= skip_to}
            self.stats.count("skipped", excess)
            self._next += excess
            self._base_seq += excess  # the clock moves with the stream: no catch-up burst

    def _play_one(self) -> None:
        assert self._next is not None and self._decoder is not None
        item = self._buffer.pop(self._next, None)
        self._next += 1
        if item is None:
            self.stats.count("concealed")
            self._emit(self._decoder.decode(None), None)
            return
        packet, t_ns, _ = item
        corrupt = self._decoder.corrupt
        samples = self._decoder.decode(packet)
        if self._decoder.corrupt != corrupt:
            self.stats.error("corrupt_packet", "packet does not decode; concealed")
            self.stats.count("concealed")
            self._emit(samples, None)
        else:
            self.stats.count("played")
            self._emit(samples, t_ns)

    def _emit(self, samples: np.ndarray, t_ns: int | None) -> None:
        if t_ns is not None:
            # The block's first sample plays after what the sink holds now, plus the device.
            self.stats.observe_latency((time.time_ns() - t_ns) / 1e9 + self._output_latency_s())
        self.sink.write(samples)
        self.stats.count("samples_played", samples.size)

    def _finish(self) -> None:
        if self._decoder is not None:
            self._emit(self._decoder.flush(), None)
        self.ended = True

    def finish(self) -> None:
        """Play what is buffered (concealing holes) and the last tail; the stream is over."""
        with self._lock:
            while self._next is not None and self._buffer and not self.ended:
                self._play_one()
            if not self.ended:
                self._finish()


def _open_sink(cfg: RxConfig, hop: int) -> tuple[Sink, Callable[[], float], Callable[[], dict]]:
    if cfg.output == "speaker":
        from devices.sound import Speaker

        # The device pulls 10 ms blocks; frames come a hop at a time, so playout starts once a
        # hop and one block are buffered (else every hop boundary would be an underrun).
        block = CODEC_FS // 100
        prefill = -(-hop // block) + 1
        speaker = Speaker(cfg.device, fs=CODEC_FS, block=block, prefill_blocks=prefill,
                          latency=cfg.device_latency,
                          queue_blocks=4 * prefill)
        speaker.open()
        return (speaker, lambda: float(speaker.latency_s + speaker.buffered_s),
                speaker.stats)
    wav = WavSink(cfg.output, CODEC_FS)
    return wav, lambda: 0.0, lambda: {"samples_written": wav.samples_written}


def run_codec_rx(cfg: RxConfig, *, codec: Codec | None = None,
                 ready: Callable[[str], None] | None = None) -> int:
    """Receive and play until SIGINT/SIGTERM, ``seconds``, or (``until_end``) the stream's end.

    ``ready`` is called with the bound endpoint once the socket listens (tests, benches).
    Raises :class:`~stream.errors.SecurityError` (before anything is loaded or bound) for a
    ``bind`` reachable from the network without keys, unless ``insecure``.
    """
    check_bind(cfg.bind, secured=cfg.security is not None, insecure=cfg.insecure,
               what="codec-rx")
    own = codec is None
    codec = codec or _load(cfg.codec, cfg.backend, cfg.cache_dir)
    until_end = cfg.until_end if cfg.until_end is not None else cfg.output != "speaker"
    stats, lock = LinkStats("rx"), threading.Lock()
    stats.ready()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.RCVHWM, 1000)
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_PACKET_BYTES + 8192)
    sock.setsockopt(zmq.LINGER, 0)
    guard = secure_server(sock, cfg.security)
    refused = RefusedConnections(sock) if guard is not None else None
    sock.bind(cfg.bind)
    bound = str(sock.getsockopt_string(zmq.LAST_ENDPOINT))
    log.info("codec-rx: listening on %s (%s), codec %s, output %s, stream %r", bound,
             "CURVE" if guard else "no keys", codec.model_id, cfg.output, cfg.stream)
    sink, latency, sink_stats = _open_sink(cfg, codec.config.hop)
    receiver = CodecReceiver(
        codec, sink, jitter_ms=cfg.jitter_ms, stream=cfg.stream,
        sender=None if cfg.sender is None else cfg.sender.decode("ascii"),
        output_latency_s=latency, stats=stats, lock=lock)
    server = _serve_metrics(stats, lock, cfg.metrics_port, cfg.metrics_addr)
    deadline = None if cfg.seconds is None else time.monotonic() + cfg.seconds
    if ready is not None:
        ready(bound)
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    try:
        # Ctrl-C or SIGTERM ends the loop; what is buffered is still played out.
        with contextlib.suppress(KeyboardInterrupt), interrupt_on_signals():
            while True:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                due = receiver.next_due()
                wait_s = 0.05 if due is None else min(0.05, max(0.0, due - now))
                if poller.poll(round(wait_s * 1000)):
                    while True:
                        try:
                            frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        # With keys every message carries its sender's key (ZAP's user id).
                        peer = str(frames[0].get("User-Id")) if guard is not None else None
                        receiver.receive(frames, peer=peer)
                if refused is not None and (n := refused.take()):
                    with lock:
                        stats.error("unauthenticated", "a connection without a listed key "
                                    "was refused", n)
                receiver.play_due()
                if until_end and receiver.ended:
                    break
        receiver.finish()
    finally:
        sink.close()  # a speaker plays out what it holds first
        with lock:
            stats.device = sink_stats()
        if refused is not None:
            refused.close()
        _release(sock, server, codec if own else None, guard)
    with lock:
        report = stats.snapshot()
    log.info("codec-rx: %s", json.dumps(report))
    _write_report(cfg.report, report)
    return 0
