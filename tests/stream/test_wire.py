"""Property tests of wire format v1 (stream.wire): round trips, hostile input, every corruption."""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from wire_checks import check_decode

from stream.errors import WireError
from stream.wire import (
    DTYPES,
    MAX_REASON_CHARS,
    Message,
    WireLimits,
    data_message,
    decode,
    encode,
    error_message,
    result_message,
)

DATA_KINDS = ["spectrum", "ecg", "codec", "audio", "x-ray_2"]
RESERVED = {"v", "kind", "stream", "seq", "t_ns", "dtype", "shape", "fs"}

PROPS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

# -- strategies ---------------------------------------------------------------------------------

streams = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=128
).filter(lambda s: s.isprintable() and not any(c.isspace() for c in s))
seqs = st.integers(0, 2**64 - 1)
t_nss = st.integers(-(2**63), 2**63 - 1)
fss = st.floats(min_value=1e-3, max_value=1e9, allow_nan=False, allow_infinity=False)
scalars = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False) | st.text(max_size=20) | st.binary(max_size=20)
)
msgpack_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)
# Anything msgpack can carry, maps with non-string keys included.
any_msgpack = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8) | st.integers(-5, 5), inner, max_size=4),
    max_leaves=12,
)
extras = st.dictionaries(
    st.text(max_size=12).filter(lambda k: k not in RESERVED), msgpack_values, max_size=4
)


@st.composite
def arrays(draw: st.DrawFn) -> np.ndarray:
    dtype = np.dtype(draw(st.sampled_from(sorted(DTYPES))))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))
    return draw(hnp.arrays(dtype.newbyteorder(draw(st.sampled_from("<>="))), shape))


@st.composite
def data_messages(draw: st.DrawFn) -> Message:
    kind = draw(st.sampled_from(DATA_KINDS))
    return data_message(kind, draw(streams), draw(seqs), draw(arrays()), t_ns=draw(t_nss),
                        fs=draw(st.none() | fss), **draw(extras))


# -- round trips --------------------------------------------------------------------------------


@PROPS
@given(data_messages(), st.booleans())
def test_data_round_trip(msg: Message, topic: bool) -> None:
    got = decode(encode(msg, topic=topic), topic=topic)
    assert got.header == msg.header  # extra keys kept, every field unchanged
    sent = np.asarray(msg.payload)
    assert got.payload.shape == sent.shape
    assert got.payload.dtype == np.dtype(msg.header["dtype"]).newbyteorder("<")
    # Bit-exact, NaN payloads and -0.0 included.
    assert got.payload.astype(sent.dtype.newbyteorder("<")).tobytes() == sent.astype(
        sent.dtype.newbyteorder("<")
    ).tobytes()


@PROPS
@given(streams, seqs, t_nss, msgpack_values, extras)
def test_result_and_error_round_trip(stream: str, seq: int, t_ns: int, value: Any,
                                     extra: dict) -> None:
    answers = {"stream": stream, "seq": seq, "t_ns": t_ns}
    result = result_message("spectral", answers, {"roi": [[1, 5]], "x": value}, **extra)
    got = decode(encode(result, topic=True), topic=True)
    assert got.header == result.header and got.payload == result.payload
    assert (got.stream, got.seq, got.t_ns) == (stream, seq, t_ns)
    assert got.kind == "result.spectral" and got.topic == f"result.spectral/{stream}"
    error = error_message("bad_dtype", "nope", stream=stream, seq=seq)
    got = decode(encode(error, topic=True), topic=True)
    assert got.payload == {"code": "bad_dtype", "reason": "nope", "seq": seq}
    assert got.topic == f"error/{stream}"
    unknown = decode(encode(error_message("bad_msgpack", "?"), topic=True), topic=True)
    assert unknown.topic == "error/?" and unknown.seq is None


# -- hostile input ------------------------------------------------------------------------------


@PROPS
@given(st.lists(st.binary(max_size=64), max_size=4), st.booleans())
def test_random_bytes_only_raise_wire_error(frames: list[bytes], topic: bool) -> None:
    check_decode(frames, topic=topic)


@PROPS
@given(
    st.dictionaries(st.sampled_from(sorted(RESERVED)) | st.text(max_size=6), any_msgpack,
                    max_size=10),
    st.binary(max_size=64),
    st.booleans(),
)
def test_random_msgpack_maps_only_raise_wire_error(header: dict, payload: bytes,
                                                   topic: bool) -> None:
    frames = [msgpack.packb(header, use_bin_type=True), payload]
    if topic:
        frames.insert(0, f"{header.get('kind')}/{header.get('stream')}".encode())
    check_decode(frames, topic=topic)


@PROPS
@given(data_messages(), st.sampled_from(sorted(RESERVED)), any_msgpack, st.booleans())
def test_any_value_in_any_field_only_raises_wire_error(
    msg: Message, key: str, value: Any, topic: bool
) -> None:
    frames = encode(msg, topic=topic)
    header = dict(msg.header, **{key: value})
    frames[-2] = msgpack.packb(header, use_bin_type=True)
    check_decode(frames, topic=topic)


@PROPS
@given(any_msgpack.filter(lambda v: not isinstance(v, dict)), st.binary(max_size=8))
def test_header_that_is_not_a_map(value: Any, payload: bytes) -> None:
    with pytest.raises(WireError) as info:
        decode([msgpack.packb(value, use_bin_type=True), payload])
    assert info.value.code == "bad_msgpack"


# -- every single-field corruption is rejected with the right code ------------------------------

_MISSING = object()
CORRUPTIONS: list[tuple[str, Any, str]] = [
    *[(key, _MISSING, "missing_field") for key in ("v", "kind", "stream", "seq", "t_ns",
                                                  "dtype", "shape")],
    *[("v", value, "version") for value in (0, 2, -1, "1", 1.0, True, None, [1])],
    *[("kind", value, "bad_field") for value in ("", "Spectrum", "has space", "-x", "1d",
                                                 "x" * 65, 3, None, ["ecg"], {"k": 1})],
    *[("stream", value, "bad_field") for value in ("", "a b", "tab\there", "x" * 129, "nl\n",
                                                   "\x00", 5, None, b"s", ["s"])],
    *[("seq", value, "bad_field") for value in (-1, 1.5, "3", True, None, [0], b"\x00")],
    *[("t_ns", value, "bad_field") for value in (1.5, "1", None, True, 2**63, [1], {})],
    *[("dtype", value, "bad_dtype") for value in ("float128", ">f4", "<f4", "object", "bool",
                                                  "complex64", "msgpack", "", 7, None,
                                                  ["float32"], {"d": 1}, b"float32")],
    *[("shape", value, "bad_field") for value in ("5", 5, None, [-1], [1.5], [True], ["2"],
                                                  [1, 1, 1, 1, 1], {"0": 1}, [[2]])],
    ("shape", [2**40], "oversize"),
    # A zero dimension makes the product 0: each dimension is bounded too (issue 10).
    *[("shape", value, "oversize") for value in ([0, 2**63], [0, 2**40, 2**40], [2**64 - 1, 0],
                                                  [0, 2**26, 2**26, 2**26])],
    ("kind", "result." + "x" * 100, "bad_field"),
    *[("fs", value, "bad_field") for value in (1e13, 1e-7, 5e-324, 2**64 - 1)],
    *[("fs", value, "bad_field") for value in (0, -1.0, float("nan"), float("inf"), "x", True,
                                               None, [1.0])],
]


@st.composite
def spectra(draw: st.DrawFn) -> Message:
    array = draw(hnp.arrays(np.float32, st.integers(1, 64)))
    return data_message("spectrum", draw(streams), draw(seqs), array, t_ns=draw(t_nss),
                        fs=draw(st.none() | fss))


@PROPS
@given(spectra(), st.sampled_from(CORRUPTIONS), st.booleans())
def test_every_single_field_corruption_is_rejected(
    msg: Message, corruption: tuple[str, Any, str], topic: bool
) -> None:
    key, value, code = corruption
    header = dict(msg.header)
    if value is _MISSING:
        header.pop(key)
    else:
        header[key] = value
    frames = encode(msg, topic=topic)
    frames[-2] = msgpack.packb(header, use_bin_type=True)
    with pytest.raises(WireError) as info:
        decode(frames, topic=topic)
    assert info.value.code == code, info.value
    # The sender can still be answered: stream and seq are reported when they were readable.
    if key != "stream":
        assert info.value.stream == msg.stream
    if key not in ("stream", "seq"):
        assert info.value.seq == msg.seq


@pytest.mark.parametrize("kind", ["video", "result", "a" * 64, "x-ray_2"])
def test_any_well_formed_data_kind_decodes(kind: str) -> None:
    # Kinds are declared by the paths ("kinds may be added within version 1"): the wire checks
    # their form; a service answers `wrong_kind` for one it does not serve.
    msg = data_message(kind, "s", 0, np.zeros(4, np.int16), t_ns=0)
    assert decode(encode(msg)).kind == kind


@PROPS
@given(data_messages(), st.sampled_from([-1, 1]), st.booleans())
def test_payload_length_off_by_one(msg: Message, delta: int, topic: bool) -> None:
    frames = encode(msg, topic=topic)
    assume(len(frames[-1]) + delta >= 0)
    frames[-1] = frames[-1][:-1] if delta < 0 else frames[-1] + b"\x00"
    with pytest.raises(WireError) as info:
        decode(frames, topic=topic)
    assert info.value.code == "payload_length"
    assert (info.value.stream, info.value.seq) == (msg.stream, msg.seq)


@PROPS
@given(spectra(), st.integers(1, 3))
def test_shape_that_does_not_match_the_payload(msg: Message, extra: int) -> None:
    header = dict(msg.header, shape=[msg.header["shape"][0] + extra])
    with pytest.raises(WireError) as info:
        decode([msgpack.packb(header), encode(msg)[1]])
    assert info.value.code == "payload_length"


# -- topic frame and frame count ----------------------------------------------------------------


@PROPS
@given(spectra(), st.binary(max_size=40))
def test_topic_frame_must_match_kind_and_stream(msg: Message, topic: bytes) -> None:
    frames = encode(msg, topic=True)
    assume(topic != frames[0])
    frames[0] = topic
    with pytest.raises(WireError) as info:
        decode(frames, topic=True)
    assert info.value.code == "bad_topic"
    assert (info.value.stream, info.value.seq) == (msg.stream, msg.seq)


def test_topic_of_another_stream_is_rejected() -> None:
    frames = encode(data_message("spectrum", "inst-1", 0, np.zeros(3, np.float32), t_ns=0),
                    topic=True)
    assert frames[0] == b"spectrum/inst-1"
    frames[0] = b"spectrum/inst-2"
    with pytest.raises(WireError, match="bad_topic"):
        decode(frames, topic=True)


@pytest.mark.parametrize("topic", [False, True])
def test_frame_count(topic: bool) -> None:
    frames = encode(data_message("spectrum", "s", 0, np.zeros(3, np.float32), t_ns=0),
                    topic=topic)
    for bad in (frames[1:], [*frames, b""], []):
        with pytest.raises(WireError) as info:
            decode(bad, topic=topic)
        assert info.value.code == "frame_count"


# -- limits -------------------------------------------------------------------------------------


def test_limits_are_enforced_before_allocation() -> None:
    limits = WireLimits(max_header_bytes=256, max_payload_bytes=64, max_ndim=2,
                        max_stream_chars=8)
    msg = data_message("spectrum", "s", 0, np.zeros(32, np.float32), t_ns=0)
    with pytest.raises(WireError, match="oversize"):
        decode(encode(msg), limits=limits)  # 128 payload bytes > 64
    big_header = data_message("spectrum", "s", 0, np.zeros(1, np.float32), t_ns=0, pad="x" * 300)
    with pytest.raises(WireError, match="oversize"):
        decode(encode(big_header), limits=limits)
    cube = data_message("spectrum", "s", 0, np.zeros((1, 1, 1), np.float32), t_ns=0)
    with pytest.raises(WireError, match="bad_field"):
        decode(encode(cube), limits=limits)
    long_name = data_message("spectrum", "abcdefghi", 0, np.zeros(1, np.float32), t_ns=0)
    with pytest.raises(WireError, match="bad_field"):
        decode(encode(long_name), limits=limits)


def test_msgpack_payload_of_a_result_must_be_a_map() -> None:
    result = result_message("spectral", {"stream": "s", "seq": 1, "t_ns": 0}, {"roi": []})
    frames = encode(result)
    for payload in (msgpack.packb([1, 2]), b"\xc1", b""):
        with pytest.raises(WireError) as info:
            decode([frames[0], payload])
        assert info.value.code == "bad_msgpack" and info.value.seq == 1


# -- hostile sizes: echoed text, msgpack bodies, header keys --------------------------------------


def test_echoed_text_is_clipped() -> None:
    header = {"v": 1, "kind": "spectrum", "stream": "s", "seq": 1, "t_ns": 0,
              "dtype": "f" * 8000, "shape": [1]}
    with pytest.raises(WireError) as info:
        decode([msgpack.packb(header), b"\0" * 4])
    assert info.value.code == "bad_dtype" and len(info.value.reason) < 300
    assert "…" in info.value.reason
    error = error_message("internal", "y" * 100_000, stream="s", seq=1)
    assert len(error.payload["reason"]) == MAX_REASON_CHARS


def test_msgpack_bodies_are_bounded() -> None:
    # Unpacking inflates: 4 MiB of empty lists is ~300 MB of Python objects.
    header = {"v": 1, "kind": "error", "stream": "s", "dtype": "msgpack", "shape": []}
    n = 2 << 20
    body = b"\x81\xa1a\xdd" + n.to_bytes(4, "big") + b"\x90" * n
    with pytest.raises(WireError, match="oversize"):
        decode([msgpack.packb(header), body])
    assert decode([msgpack.packb(header), body], limits=WireLimits(max_msgpack_bytes=4 << 20))


def test_header_keys_are_bounded() -> None:
    base = {"v": 1, "kind": "spectrum", "stream": "s", "seq": 1, "t_ns": 0,
            "dtype": "uint8", "shape": [1]}
    for extra in ({f"k{i}": 0 for i in range(100)}, {"k" * 65: 0}):
        with pytest.raises(WireError) as info:
            decode([msgpack.packb({**base, **extra}), b"\0"])
        assert info.value.code == "bad_field" and (info.value.stream, info.value.seq) == ("s", 1)


def test_memoryview_frames_are_counted_in_bytes() -> None:
    base = {"v": 1, "kind": "spectrum", "stream": "s", "seq": 1, "t_ns": 0,
            "dtype": "float32", "shape": [2, 3]}
    wide = np.arange(6, dtype="<f4").reshape(2, 3)
    got = decode([msgpack.packb(base), memoryview(wide)])  # 6 items of 4 bytes
    assert got.payload.tolist() == wide.tolist()
