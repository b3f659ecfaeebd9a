"""Wire format v1: two pure functions, ``encode(msg) -> frames`` and ``decode(frames) -> msg``.

A message is a ZeroMQ multipart message of two frames (three on PUB/SUB, where a UTF-8 topic
``"<kind>/<stream>"`` comes first so subscribers can filter):

- frame 0, the header: a msgpack map with ``v`` (1), ``kind``, ``stream``, ``seq``, ``t_ns``,
  ``dtype``, ``shape`` and, for time series, ``fs``. Extra keys are kept.
- frame 1, the payload: raw little-endian C-ordered array bytes, exactly
  ``prod(shape) * itemsize`` long; or, when ``dtype`` is ``"msgpack"`` (results and errors), a
  msgpack map.

Nothing is trusted: every header field is checked and bounded (:class:`WireLimits`), and a
violation raises :class:`~stream.errors.WireError` with a ``code`` and, where known, ``stream``
and ``seq``, so the service can answer the sender with an ``error`` message. :func:`decode`
raises nothing else, whatever the frames. Text from the sender quoted in a reason is clipped
(:func:`clip`), so an error answer is never much bigger than its fixed text. Nothing is ever
unpickled. The full contract, with a client example, is in ``docs/protocol.md``.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

from stream.errors import WireError

__all__ = [
    "DTYPES",
    "ERROR_KIND",
    "VERSION",
    "WATCHED_KEY",
    "Message",
    "WireLimits",
    "clip",
    "data_message",
    "decode",
    "encode",
    "error_message",
    "result_message",
    "stamp",
    "topic_of",
]

VERSION = 1
# Data kinds are declared by the paths (``spectrum``, ``ecg``, ``codec``, ...; "kinds may be
# added within version 1"): the wire checks only their form, a service the kind it serves.
_DATA_KIND = re.compile(r"[a-z][a-z0-9_-]{0,63}")
RESULT_PREFIX = "result."
ERROR_KIND = "error"
MSGPACK_DTYPE = "msgpack"
WATCHED_KEY = "watched"
"""Header key set by ingest only: ``True`` on an input whose stream a viewer watches (an exact
subscription to its topic on the input mirror), so a path may add detail to its results."""
# Little-endian numeric types only: a peer on any platform writes these without ambiguity.
DTYPES = frozenset(
    {
        "int8",
        "uint8",
        "int16",
        "uint16",
        "int32",
        "uint32",
        "int64",
        "uint64",
        "float16",
        "float32",
        "float64",
    }
)
_UINT64_MAX = 2**64 - 1
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_MAX_KIND_CHARS = 64  # "result.<path>" with room to spare
MAX_QUOTE_CHARS = 120
"""Longest quotation of sender text (a value's ``repr``) in a reason, ellipsis included."""
MAX_REASON_CHARS = 400
"""Longest ``reason`` of an ``error`` answer: fixed text plus a few clipped quotations."""


@dataclass(frozen=True, kw_only=True)
class WireLimits:
    """Bounds a receiver enforces before it allocates anything for a message.

    ``max_payload_bytes`` bounds an array payload and also every dimension of ``shape`` (the
    product of its non-zero dimensions, in items), so no shape can ask numpy for more.
    ``max_msgpack_bytes`` bounds the msgpack payload of results and errors, which unpacking
    inflates up to ~70 times (a byte can be an empty list): a receiver of big results (the
    spectra of a very long spectrum) raises it. ``max_header_keys``/``max_key_chars`` bound
    the header's keys (its size is bounded by ``max_header_bytes``). ``min_fs_hz``/
    ``max_fs_hz`` bound ``fs``, so arithmetic on it (``1e9 / fs`` ns per sample) stays finite.
    """

    max_header_bytes: int = 16 * 1024
    max_payload_bytes: int = 64 * 1024 * 1024
    max_msgpack_bytes: int = 1024 * 1024
    max_ndim: int = 4
    max_stream_chars: int = 128
    max_header_keys: int = 64
    max_key_chars: int = 64
    min_fs_hz: float = 1e-6
    max_fs_hz: float = 1e12


DEFAULT_LIMITS = WireLimits()


@dataclass(frozen=True, slots=True)
class Message:
    """A decoded message: a validated header and its payload.

    ``payload`` is a read-only numpy array for data messages (it may view the received buffer:
    copy it before keeping it beyond the next receive) and a dict for results and errors.
    """

    header: dict[str, Any]
    payload: Any = field(repr=False)

    @property
    def kind(self) -> str:
        return str(self.header["kind"])

    @property
    def stream(self) -> str:
        return str(self.header["stream"])

    @property
    def seq(self) -> int | None:
        seq = self.header.get("seq")
        return None if seq is None else int(seq)

    @property
    def t_ns(self) -> int | None:
        t = self.header.get("t_ns")
        return None if t is None else int(t)

    @property
    def topic(self) -> str:
        return topic_of(self.kind, self.header.get("stream", "?"))


def topic_of(kind: str, stream: str) -> str:
    return f"{kind}/{stream}"


# ---------------------------------------------------------------------------------------------
# Building messages


def data_message(
    kind: str,
    stream: str,
    seq: int,
    array: np.ndarray,
    *,
    t_ns: int | None = None,
    fs: float | None = None,
    **extra: Any,
) -> Message:
    """A data message for ``array`` (any numeric dtype in :data:`DTYPES`, any C-contiguous shape).

    ``t_ns`` is the capture time of the first sample (Unix epoch ns); it defaults to now.
    """
    array = np.asarray(array)
    dtype = array.dtype.newbyteorder("=").name if array.dtype.byteorder != "|" else array.dtype.name
    header: dict[str, Any] = {
        **extra,
        "v": VERSION,
        "kind": kind,
        "stream": stream,
        "seq": int(seq),
        "t_ns": time.time_ns() if t_ns is None else int(t_ns),
        "dtype": dtype,
        "shape": [int(n) for n in array.shape],
    }
    if fs is not None:
        header["fs"] = float(fs)
    _check_header(header, DEFAULT_LIMITS)
    return Message(header, array)


def result_message(
    path: str, answers: Mapping[str, Any], body: Mapping[str, Any], **extra: Any
) -> Message:
    """The result of path ``path`` for the input whose header is ``answers``.

    The result keeps the input's ``stream``, ``seq`` and ``t_ns`` so a client can pair them and
    measure capture-to-result latency.
    """
    header = {
        **extra,
        "v": VERSION,
        "kind": RESULT_PREFIX + path,
        "stream": answers["stream"],
        "seq": answers["seq"],
        "t_ns": answers["t_ns"],
        "dtype": MSGPACK_DTYPE,
        "shape": [],
    }
    return Message(header, dict(body))


def error_message(
    code: str, reason: str, *, stream: str | None = None, seq: int | None = None, **extra: Any
) -> Message:
    """An ``error`` answer; ``stream`` is ``"?"`` when the sender's stream could not be read.
    The ``code`` is in the header too, so a router can count answers without the payload.

    ``reason`` is clipped to :data:`MAX_REASON_CHARS`: it may quote what a sender sent.
    """
    header: dict[str, Any] = {
        **extra,
        "v": VERSION,
        "kind": ERROR_KIND,
        "code": code,
        "stream": stream if stream is not None else "?",
        "t_ns": time.time_ns(),
        "dtype": MSGPACK_DTYPE,
        "shape": [],
    }
    body: dict[str, Any] = {"code": code, "reason": clip(reason, MAX_REASON_CHARS)}
    if seq is not None:
        header["seq"] = int(seq)
        body["seq"] = int(seq)
    return Message(header, body)


# ---------------------------------------------------------------------------------------------
# Encoding and decoding


def encode(msg: Message, *, topic: bool = False) -> list[bytes]:
    """Frames for ``msg``: ``[header, payload]``, or ``[topic, header, payload]`` for PUB."""
    header = msgpack.packb(msg.header, use_bin_type=True)
    if msg.header["dtype"] == MSGPACK_DTYPE:
        payload = msgpack.packb(msg.payload, use_bin_type=True)
    else:
        array = np.asarray(msg.payload)
        payload = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    frames = [header, payload]
    if topic:
        frames.insert(0, msg.topic.encode())
    return frames


def decode(
    frames: Sequence[Any], *, topic: bool = False, limits: WireLimits = DEFAULT_LIMITS
) -> Message:
    """Validate and decode ``frames`` (bytes, memoryviews or ``zmq.Frame``).

    Raises :class:`WireError`, and nothing else, for anything that is not a well-formed v1
    message within ``limits``.
    """
    expected = 3 if topic else 2
    if len(frames) != expected:
        raise WireError(
            "frame_count", f"expected {expected} frames (header, payload), got {len(frames)}"
        )
    raw = [_buffer(f) for f in frames]
    if topic:
        topic_frame, raw = raw[0], raw[1:]
    header_raw, payload_raw = raw
    if len(header_raw) > limits.max_header_bytes:
        raise WireError(
            "oversize", f"header is {len(header_raw)} bytes, limit {limits.max_header_bytes}"
        )
    try:
        header = msgpack.unpackb(header_raw, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises several types for malformed input
        raise WireError("bad_msgpack", f"header is not valid msgpack: {_quote(exc)}") from None
    if not isinstance(header, dict):
        raise WireError("bad_msgpack", f"header must be a msgpack map, got {type(header).__name__}")
    _check_header(header, limits)
    stream, seq = header["stream"], header.get("seq")
    if topic:
        expected_topic = topic_of(header["kind"], stream)
        if bytes(topic_frame) != expected_topic.encode():
            raise WireError(
                "bad_topic", f"topic frame must be {expected_topic!r}", stream=stream, seq=seq
            )
    is_msgpack = header["dtype"] == MSGPACK_DTYPE
    limit = min(limits.max_payload_bytes, limits.max_msgpack_bytes) if is_msgpack else (
        limits.max_payload_bytes)
    if len(payload_raw) > limit:
        raise WireError(
            "oversize",
            f"payload is {len(payload_raw)} bytes, limit {limit}",
            stream=stream,
            seq=seq,
        )
    if is_msgpack:
        try:
            body = msgpack.unpackb(payload_raw, raw=False, strict_map_key=True)
        except Exception as exc:
            raise WireError(
                "bad_msgpack", f"payload is not valid msgpack: {_quote(exc)}", stream=stream,
                seq=seq,
            ) from None
        if not isinstance(body, dict):
            raise WireError("bad_msgpack", "msgpack payload must be a map", stream=stream, seq=seq)
        return Message(header, body)
    dtype = np.dtype(header["dtype"]).newbyteorder("<")
    shape = tuple(header["shape"])
    expected_bytes = math.prod(shape) * dtype.itemsize
    if len(payload_raw) != expected_bytes:
        raise WireError(
            "payload_length",
            f"payload is {len(payload_raw)} bytes; shape {list(shape)} of {header['dtype']} "
            f"needs {expected_bytes}",
            stream=stream,
            seq=seq,
        )
    array = np.frombuffer(payload_raw, dtype=dtype).reshape(shape)
    return Message(header, array)


def clip(text: str, limit: int = MAX_QUOTE_CHARS) -> str:
    """``text``, cut to at most ``limit`` characters with an ellipsis when it is longer."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def _quote(value: Any) -> str:
    """A sender's value as a reason quotes it: its ``repr`` (an exception's text), clipped."""
    return clip(str(value) if isinstance(value, Exception) else repr(value))


def _buffer(frame: Any) -> bytes | bytearray | memoryview:
    # zmq.Frame exposes its bytes as .buffer without a copy; bytes and memoryviews pass through.
    buf = getattr(frame, "buffer", frame)
    if isinstance(buf, (bytes, bytearray)):
        return buf
    if isinstance(buf, memoryview):
        if buf.ndim == 1 and buf.itemsize == 1:
            return buf
        try:  # len() of a view of wider items counts items, not bytes
            return buf.cast("B")
        except TypeError:
            raise WireError("frame_count", "frame is a non-contiguous buffer") from None
    raise WireError("frame_count", f"frame of type {type(frame).__name__} is not bytes")


def _check_header(header: dict[str, Any], limits: WireLimits) -> None:
    stream = header.get("stream")
    stream = stream if isinstance(stream, str) and _valid_stream(stream, limits) else None
    raw_seq = header.get("seq")
    seq = (
        raw_seq
        if isinstance(raw_seq, int) and _is_int(raw_seq) and 0 <= raw_seq <= _UINT64_MAX
        else None
    )

    def fail(code: str, reason: str) -> WireError:
        return WireError(code, reason, stream=stream, seq=seq)

    if len(header) > limits.max_header_keys:
        raise fail("bad_field", f"header has {len(header)} keys, limit {limits.max_header_keys}")
    for key in header:
        if not isinstance(key, str):
            raise fail("bad_msgpack", f"header key {_quote(key)} is not a string")
        if len(key) > limits.max_key_chars:
            raise fail("bad_field", f"header key {_quote(key)} is longer than "
                       f"{limits.max_key_chars} characters")
    for key in ("v", "kind", "stream", "dtype", "shape"):
        if key not in header:
            raise fail("missing_field", f"header has no {key!r}")
    if not _is_int(header["v"]) or header["v"] != VERSION:
        raise fail("version",
                   f"unsupported wire version {_quote(header['v'])}; this service speaks 1")
    kind = header["kind"]
    if not isinstance(kind, str) or len(kind) > _MAX_KIND_CHARS or not (
        _DATA_KIND.fullmatch(kind) or kind == ERROR_KIND or kind.startswith(RESULT_PREFIX)
    ):
        raise fail(
            "bad_field",
            f"kind {_quote(kind)} is not a data kind (lowercase letters, digits, '-', '_'), "
            "'error' or 'result.<path>'",
        )
    if stream is None:
        raise fail(
            "bad_field",
            f"stream must be a non-empty string of at most {limits.max_stream_chars} printable "
            "characters without spaces",
        )
    if "seq" in header and seq is None:
        raise fail("bad_field",
                   f"seq must be an unsigned 64-bit integer, got {_quote(header['seq'])}")
    if kind != ERROR_KIND and "seq" not in header:
        raise fail("missing_field", "header has no 'seq'")
    if kind != ERROR_KIND and "t_ns" not in header:
        raise fail("missing_field", "header has no 't_ns'")
    if "t_ns" in header and not (
        _is_int(header["t_ns"]) and _INT64_MIN <= header["t_ns"] <= _INT64_MAX
    ):
        raise fail("bad_field", f"t_ns must be a 64-bit integer, got {_quote(header['t_ns'])}")
    dtype = header["dtype"]
    is_msgpack = kind == ERROR_KIND or kind.startswith(RESULT_PREFIX)
    if is_msgpack:
        if dtype != MSGPACK_DTYPE:
            raise fail("bad_dtype", f"{kind} messages carry dtype 'msgpack', got {_quote(dtype)}")
    elif not isinstance(dtype, str) or dtype not in DTYPES:  # a list is unhashable
        raise fail(
            "bad_dtype",
            f"dtype {_quote(dtype)} is not one of {sorted(DTYPES)} (little-endian names)",
        )
    shape = header["shape"]
    if not isinstance(shape, list) or len(shape) > limits.max_ndim:
        raise fail("bad_field", f"shape must be a list of at most {limits.max_ndim} "
                   f"non-negative integers, got {_quote(shape)}")
    if not all(_is_int(n) and n >= 0 for n in shape):
        raise fail("bad_field", f"shape must be a list of non-negative integers, got "
                   f"{_quote(shape)}")
    # Each dimension is bounded, not only the product: a zero makes the product 0 whatever
    # the others, and numpy refuses a shape whose non-zero dimensions overflow its index type.
    if math.prod(max(n, 1) for n in shape) > limits.max_payload_bytes:
        raise fail("oversize", f"shape {_quote(shape)} is larger than "
                   f"{limits.max_payload_bytes} items")
    if "fs" in header:
        fs = header["fs"]
        if (
            isinstance(fs, bool)
            or not isinstance(fs, (int, float))
            or not limits.min_fs_hz <= fs <= limits.max_fs_hz  # False for NaN
        ):
            raise fail("bad_field", f"fs must be a number of samples/s from {limits.min_fs_hz:g} "
                       f"to {limits.max_fs_hz:g}, got {_quote(fs)}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _valid_stream(stream: str, limits: WireLimits) -> bool:
    return (
        0 < len(stream) <= limits.max_stream_chars
        and stream.isprintable()
        and (not any(ch.isspace() for ch in stream))
    )


def stamp(header: dict[str, Any], frames: list[Any], key: str, value: Any) -> list[Any]:
    """Set the service's own header ``key`` to ``value`` (``None``: remove it) in ``header``, a
    received message's decoded header, changed in place: whatever the sender wrote there is
    replaced. Returns the frames to forward: the same ones when nothing changed, else the
    header re-encoded and the payload frame untouched."""
    if header.get(key) == value and (value is not None or key not in header):
        return frames
    header.pop(key, None)
    if value is not None:
        header[key] = value
    return [msgpack.packb(header, use_bin_type=True), *frames[1:]]
