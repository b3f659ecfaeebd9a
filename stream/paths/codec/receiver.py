"""The receiving end of the codec link, ``sigstream run codec-rx``: receive, jitter buffer,
decode, play (:mod:`stream.paths.codec.link`).

It plays one named stream (``stream``); with keys (:mod:`stream.security`) only
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
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import zmq

from devices.audio import CODEC_FS, WavSink
from engines.codec.codec import Codec, StreamDecoder
from stream.errors import WireError
from stream.paths.codec.link import (
    LinkEndConfig,
    LinkStats,
    load_link_codec,
    release_link,
    serve_link_metrics,
    write_link_report,
)
from stream.security import (
    RefusedConnections,
    ServerSecurity,
    check_bind,
    secure_server,
)
from stream.sources import interrupt_on_signals
from stream.wire import WireLimits, decode

__all__ = [
    "IDLE_S",
    "CodecReceiver",
    "RxConfig",
    "run_codec_rx",
]

log = logging.getLogger("stream.paths.codec.link")  # both ends of the link log under one name

#: Receiver: silence from the sender this long pauses playout until the next packet.
IDLE_S = 0.5
#: Receiver: a packet this far (seconds of audio) behind or ahead of playout restarts it.
RESYNC_S = 2.0
#: Receiver: frames buffered beyond the jitter buffer's depth before the oldest are skipped.
SLACK_FRAMES = 2
MAX_PACKET_BYTES = 8192
_LIMITS = WireLimits(max_payload_bytes=MAX_PACKET_BYTES, max_header_bytes=4096)


class Sink(Protocol):
    def write(self, block: np.ndarray) -> None: ...
    def close(self) -> None: ...

@dataclass(frozen=True, kw_only=True)
class RxConfig(LinkEndConfig):
    """The receiving end (:class:`~stream.paths.codec.link.LinkEndConfig` for the fields both
    ends share): ``bind`` address; ``output``: ``"speaker"`` or a WAV path; ``stream``: the one
    to play; ``jitter_ms``: the jitter buffer's depth; ``until_end``: stop after the stream's
    end marker (default for a file output). ``security``: CURVE keys (only listed senders
    connect) and ``sender``: the one sender key (z85) to play; without keys a ``bind``
    reachable from the network is refused unless ``insecure``."""

    bind: str = "tcp://127.0.0.1:5557"
    output: str = "speaker"
    jitter_ms: float = 40.0
    until_end: bool | None = None
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
        # A jump beyond this is a new stream; never less than the jitter buffer holds.
        self._resync_frames = int(max(RESYNC_S, 2 * self.jitter_s) / self._hop_s)
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
        kept = {s: v for s, v in self._buffer.items() if seq <= s <= seq + self._resync_frames}
        if len(kept) < len(self._buffer):  # received, never to be played: counted
            self.stats.count("resync_dropped", len(self._buffer) - len(kept))
        self._buffer = kept
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
                if (now - self._last_arrival > IDLE_S and not self._buffer
                        and self._end_seq is None):
                    break  # sender silent: pause until its next packet (after its end
                    # marker, what is missing up to the end is concealed instead)
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
        self.stats.level(samples)

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
        from devices.speaker import Speaker

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
    codec = codec or load_link_codec(cfg.codec, cfg.backend, cfg.cache_dir)
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
    server = serve_link_metrics(stats, lock, cfg.metrics_port, cfg.metrics_addr)
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
        release_link(sock, server, codec if own else None, guard)
    with lock:
        report = stats.snapshot()
    log.info("codec-rx: %s", json.dumps(report))
    write_link_report(cfg.report, report)
    return 0
