"""The property every decode of hostile bytes must hold, shared by the wire tests
(``test_wire.py``) and the fuzz suite (``test_fuzz.py``): :func:`stream.wire.decode` returns a
message within its limits, or raises a :class:`~stream.errors.WireError` with one of the codes
that class documents and a bounded reason; nothing else.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stream.errors import WireError
from stream.wire import MAX_REASON_CHARS, Message, WireLimits, decode

__all__ = ["WIRE_ERROR_CODES", "check_decode"]

# The codes WireError documents; anything else raised is a bug.
WIRE_ERROR_CODES = frozenset({
    "bad_msgpack", "missing_field", "bad_field", "payload_length", "bad_dtype", "oversize",
    "frame_count", "version", "bad_topic",
})


def check_decode(frames: list[Any], *, topic: bool = False,
                 limits: WireLimits | None = None) -> Message | None:
    """Decode ``frames`` (``limits``: the decoder's, its defaults when ``None``) and assert the
    property: a message within the limits (returned), or a documented ``WireError`` with a
    reason of at most ``MAX_REASON_CHARS`` characters (``None`` returned)."""
    limits = WireLimits() if limits is None else limits
    try:
        msg = decode(frames, topic=topic, limits=limits)
    except WireError as exc:
        assert exc.code in WIRE_ERROR_CODES, exc
        assert len(exc.reason) <= MAX_REASON_CHARS, exc.reason[:200]
        return None
    h = msg.header
    assert len(h) <= limits.max_header_keys
    assert 0 < len(msg.stream) <= limits.max_stream_chars
    assert msg.seq is None or 0 <= msg.seq < 2**64
    assert msg.t_ns is None or -(2**63) <= msg.t_ns < 2**63
    if isinstance(msg.payload, np.ndarray):
        assert msg.payload.nbytes <= limits.max_payload_bytes
        assert list(msg.payload.shape) == h["shape"]
    else:
        assert isinstance(msg.payload, dict)
    return msg
