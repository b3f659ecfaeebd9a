"""The sending end of the codec link, ``sigstream run codec-tx``: capture (microphone or an audio
file in real time), encode, send one packet per codec frame (:mod:`stream.paths.codec.link`).

A packet the socket cannot take at once (receiver gone, high-water mark reached) is
dropped and counted, never queued without bound: late audio is useless. A microphone that
disappears is reopened every second until the sender is stopped; the receiver conceals the gap.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import zmq

from devices.audio import CODEC_FS, WavSource
from devices.frames import DeviceError, EndOfStream, FrameSource
from engines.codec.codec import Codec
from stream.paths.codec import link
from stream.security import ClientSecurity
from stream.sources import interrupt_on_signals
from stream.wire import data_message, encode

__all__ = ["TxConfig", "run_codec_tx"]

log = logging.getLogger("stream.paths.codec.link")  # both ends of the link log under one name

_BLOCK_MS = 20.0  # capture block: 320 samples


@dataclass(frozen=True, kw_only=True)
class TxConfig(link.LinkEndConfig):
    """The sending end (:class:`~stream.paths.codec.link.LinkEndConfig` for the fields both
    ends share): ``input``: ``"mic"`` or an audio file; ``connect``: the receiver's address;
    ``kbps``: the codec's operating point; ``start_at``: Unix time to start capturing (many
    senders started together); ``hwm``: packets ZeroMQ queues towards the receiver;
    ``security``: CURVE keys of the link (:mod:`stream.security`)."""

    input: str
    connect: str
    kbps: float = 16.0
    start_at: float | None = None
    hwm: int = 64
    security: ClientSecurity | None = None


def _open_source(cfg: TxConfig, block: int) -> FrameSource:
    if cfg.input == "mic":
        from devices.microphone import Microphone

        return Microphone(cfg.device, fs=CODEC_FS, block=block, latency=cfg.device_latency)
    return WavSource(cfg.input, block=block, fs=CODEC_FS)  # a file plays like a microphone

def run_codec_tx(cfg: TxConfig, *, codec: Codec | None = None) -> int:
    """Capture, encode and send until the input ends, ``seconds`` pass or SIGINT/SIGTERM."""
    own = codec is None
    codec = codec or link.load_link_codec(cfg.codec, cfg.backend, cfg.cache_dir)
    stats, lock = link.LinkStats("tx"), threading.Lock()
    stats.ready()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, cfg.hwm)
    sock.setsockopt(zmq.LINGER, 2000)
    if cfg.security is not None:
        cfg.security.apply(sock)
    sock.connect(cfg.connect)
    server = link.serve_link_metrics(stats, lock, cfg.metrics_port, cfg.metrics_addr)
    try:
        _tx_loop(cfg, codec, sock, stats, lock)
    finally:
        link.release_link(sock, server, codec if own else None)
    report = stats.snapshot()
    log.info("codec-tx: %s", json.dumps(report))
    link.write_link_report(cfg.report, report)
    return 0


def _tx_loop(cfg: TxConfig, codec: Codec, sock: zmq.Socket[Any], stats: link.LinkStats,
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
                    stats.level(samples)
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
