"""Fuzz suite (issue 10, "no input kills anything").

In-process, with hypothesis: :func:`stream.wire.decode` on arbitrary frames and on valid
headers mutated field by field (it returns a message or raises ``WireError``, nothing else);
the ledger and the stage stats on arbitrary seqs and stream ids (every snapshot packs as
msgpack, the Prometheus exposition never raises); each path's message handling called without
sockets (spectral stage, spectral worker ``prepare``/``finish``, ECG per-stream stage): for any
decodable message it returns, or raises ``InputError``, and what it returns encodes. The codec
receiver counts the killer packet. Live: :mod:`bench.fuzz` against a real service per path, a
few hundred mutated messages here, 20,000 under ``-m slow`` (or ``python bench/fuzz.py``).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from wire_checks import check_decode

from bench.fuzz import LiveFuzzConfig, killers, live_fuzz
from stream import wire
from stream.accounting import COUNTER_MAX, StreamLedger, merge_ledgers
from stream.errors import InputError, WireError
from stream.metrics import MetricsCollector, MetricsServer, StageStats

# Extreme values are the point here: numpy's overflow warnings on them are expected noise.
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                                        "ignore:invalid value encountered:RuntimeWarning")

FUZZ = settings(max_examples=1000, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PATHS = settings(max_examples=300, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FIELDS = ("v", "kind", "stream", "seq", "t_ns", "dtype", "shape", "fs")
LIMITS = wire.WireLimits(max_payload_bytes=1 << 20)

# -- strategies ---------------------------------------------------------------------------------

EXTREME_INTS = (0, 1, -1, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, -(2**63),
                -(2**63) + 1)
EXTREME_FLOATS = (0.0, -0.0, math.nan, math.inf, -math.inf, 5e-324, 1e-300, 1e308, -1e308,
                  1e-7, 1e13)
scalars = (
    st.none() | st.booleans() | st.sampled_from(EXTREME_INTS) | st.integers(-(2**63), 2**64 - 1)
    | st.sampled_from(EXTREME_FLOATS) | st.floats() | st.text(max_size=12)
    | st.binary(max_size=12)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(st.text(max_size=6) | st.binary(max_size=3), inner, max_size=4),
    max_leaves=10,
)
# Shapes that lie: zeros beside huge dimensions (the killer), too many dimensions, negatives.
shapes = st.lists(st.sampled_from((0, 1, 2, 7, 2**20, 2**31, 2**62, 2**63, 2**64 - 1)) |
                  st.integers(-2, 5000), max_size=6)
long_texts = st.integers(100, 12_000).map(lambda n: "x" * n)
hostile = values | shapes | long_texts | st.sampled_from(sorted(wire.DTYPES) + ["msgpack", ">f4"])


@st.composite
def valid_messages(draw: st.DrawFn) -> wire.Message:
    kind = draw(st.sampled_from(["spectrum", "ecg", "audio", "codec", "error", "result.x"]))
    stream = draw(st.sampled_from(["s", "wearable-7", "x" * 128, "é/ü"]))
    seq = draw(st.sampled_from([n for n in EXTREME_INTS if 0 <= n < 2**64]))
    if kind == "error":
        return wire.error_message("bad_field", "r", stream=stream, seq=seq)
    if kind.startswith("result."):
        return wire.result_message("x", {"stream": stream, "seq": seq, "t_ns": 0}, {"k": 1})
    dtype = np.dtype(draw(st.sampled_from(sorted(wire.DTYPES))))
    array = draw(hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0,
                                                    max_side=6)))
    fs = 250.0 if kind in ("ecg", "audio", "codec") else None
    return wire.data_message(kind, stream, seq, array,
                             t_ns=draw(st.sampled_from((0, -(2**63)))), fs=fs)


@st.composite
def mutated_frames(draw: st.DrawFn) -> tuple[list[bytes], bool]:
    """A valid message with one to three header fields replaced, deleted or added, and its
    payload kept, cut, padded or replaced."""
    msg = draw(valid_messages())
    topic = draw(st.booleans())
    frames = wire.encode(msg, topic=topic)
    header = dict(msg.header)
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(FIELDS) | st.text(max_size=80))
        action = draw(st.sampled_from(["set", "set", "delete"]))
        if action == "delete":
            header.pop(key, None)
        else:
            header[key] = draw(hostile)
    try:
        frames[-2] = msgpack.packb(header, use_bin_type=True)
    except (OverflowError, ValueError, TypeError):  # not representable in msgpack: skip
        frames[-2] = msgpack.packb(msg.header, use_bin_type=True)
    payload = frames[-1]
    frames[-1] = draw(st.sampled_from([
        payload, payload[:-1], payload + b"\0", b"", payload[: len(payload) // 2],
    ]) | st.binary(max_size=64))
    return frames, topic




# -- decode -------------------------------------------------------------------------------------


def test_the_killer_header_is_a_wire_error() -> None:
    for frames in killers("spectrum", "s", np.zeros(4, np.float32), fs=None)["shape"]:
        with pytest.raises(WireError) as info:
            wire.decode(frames)
        assert info.value.code == "oversize" and info.value.stream == "s"
    for shape in ([0, 2**26, 2**26, 2**26], [0, 2**40, 2**40], [2**63, 0]):
        header = {"v": 1, "kind": "spectrum", "stream": "s", "seq": 3, "t_ns": 0,
                  "dtype": "float32", "shape": shape}
        with pytest.raises(WireError, match="oversize"):
            wire.decode([msgpack.packb(header), b""])


@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=4), st.booleans())
def test_decode_of_any_bytes(frames: list[bytes], topic: bool) -> None:
    check_decode(frames, topic=topic, limits=LIMITS)


@FUZZ
@given(st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=70), hostile, max_size=12),
       st.binary(max_size=128), st.booleans())
def test_decode_of_any_msgpack_header(header: dict[str, Any], payload: bytes,
                                      topic: bool) -> None:
    try:
        raw = msgpack.packb(header, use_bin_type=True)
    except (OverflowError, ValueError, TypeError):
        return
    frames = [raw, payload]
    if topic:
        frames.insert(0, f"{header.get('kind')}/{header.get('stream')}".encode())
    check_decode(frames, topic=topic, limits=LIMITS)


@FUZZ
@given(mutated_frames())
def test_decode_of_valid_headers_mutated_field_by_field(case: tuple[list[bytes], bool]) -> None:
    frames, topic = case
    check_decode(frames, topic=topic, limits=LIMITS)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([0, 1, 2, 2**20, 2**62, 2**63 - 1, 2**64 - 1]), max_size=5),
       st.sampled_from(sorted(wire.DTYPES)), st.integers(0, 64))
def test_decode_of_lying_shapes(shape: list[int], dtype: str, payload_bytes: int) -> None:
    header = {"v": 1, "kind": "spectrum", "stream": "s", "seq": 0, "t_ns": 0, "dtype": dtype,
              "shape": shape}
    check_decode([msgpack.packb(header), bytes(payload_bytes)], limits=LIMITS)


# -- bookkeeping: ledger and stage stats --------------------------------------------------------


stream_ids = st.sampled_from(["a", "b", "?", "*"]) | st.text(min_size=1, max_size=20)
seq_values = (st.sampled_from([0, 1, 2, 2**20, 2**20 + 2, 2**63, 2**64 - 1, 2**64, -1])
              | st.integers(-(2**70), 2**70) | st.none())


@FUZZ
@given(st.lists(st.tuples(stream_ids, seq_values), max_size=40), st.integers(1, 4),
       st.integers(0, 2**21))
def test_ledger_snapshots_always_pack(events: list[tuple[str, Any]], max_streams: int,
                                      max_gap: int) -> None:
    ledger = StreamLedger(max_streams=max_streams, max_gap=max_gap)
    for stream, seq in events:
        skipped = ledger.received(stream, seq)
        assert 0 <= skipped <= max_gap
        ledger.error(stream, "bad_field")
        ledger.delivered(stream)
    snap = ledger.snapshot()
    assert msgpack.unpackb(msgpack.packb(snap), strict_map_key=False) == snap
    assert len(snap) <= max_streams + 2  # "?" and "*" beside the cap
    for s in merge_ledgers([snap, snap]).values():
        for n in (s.received, s.gaps, s.gap_events, s.resets, s.delivered, s.errors_total):
            assert 0 <= n <= COUNTER_MAX


@PATHS
@given(st.lists(st.tuples(stream_ids | st.none(), seq_values,
                          st.floats() | st.sampled_from(EXTREME_FLOATS)), max_size=30))
def test_stage_stats_snapshot_packs_and_exposition_never_raises(
    events: list[tuple[str | None, Any, float]],
) -> None:
    stats = StageStats("ingest", max_streams=3)
    for stream, seq, seconds in events:
        stats.frame_in(stream)
        stats.ledger.received(stream, seq)
        stats.ledger.error(stream, "bad_field")
        stats.ledger.dropped(stream, "dropped")
        if stream is not None:
            stats.observe_latency(stream, seconds)
        stats.observe_batch(3, seconds)
        stats.frame_out(stream)
    snap = msgpack.unpackb(msgpack.packb(stats.snapshot()), strict_map_key=False)
    assert len(snap["frames_in"]) <= 3 + 2 and len(snap["latency"]) <= 3 + 1
    collector = MetricsCollector()
    collector.update(snap)
    collector.update({"stage": "broken", "frames_in": [1], "ledger": {"x": 5},
                      "batch_rows": "?"})  # a snapshot it cannot read is left out
    text = generate_latest(MetricsServer(collector, port=0).registry).decode()
    families = {f.name for f in text_string_to_metric_families(text)}
    assert "sigstream_frames_in" in families


# -- the spectral path, called without sockets --------------------------------------------------


@functools.cache
def _spectral() -> tuple[Any, Any]:
    from engines.roi.detector import RoiDetector, RoiDetectorConfig
    from stream.paths.spectral.stages import SPECTRAL_MAX_SAMPLES, SpectralPath, SpectralWorker

    detector = RoiDetector(RoiDetectorConfig(max_length_samples=SPECTRAL_MAX_SAMPLES))
    # No engine: finish gets the logits the test draws (a broken engine's NaN included).
    return SpectralPath(), SpectralWorker(None, detector, row_shape=(1, 512))


payload_values = st.floats(allow_subnormal=True) | st.sampled_from(EXTREME_FLOATS)


@st.composite
def spectral_inputs(draw: st.DrawFn) -> wire.Message:
    dtype = np.dtype(draw(st.sampled_from(sorted(wire.DTYPES))))
    shape = draw(st.sampled_from([(0,), (1,), (2,), (511,), (512,), (513,), (1100,), (2, 256),
                                  (), (4, 1, 2)]) | hnp.array_shapes(max_dims=1, max_side=2000))
    if dtype.kind == "f":
        array = draw(hnp.arrays(dtype, shape, elements=payload_values.map(
            lambda v: float(np.asarray(v).astype(dtype)) if math.isfinite(v) else v)))
    else:
        array = draw(hnp.arrays(dtype, shape))
    msg = wire.data_message("spectrum", "s", draw(st.integers(0, 2**64 - 1)), array, t_ns=0)
    # what the stages get: a decoded message
    return wire.decode(wire.encode(msg), limits=LIMITS)


@PATHS
@given(spectral_inputs(), st.sampled_from(["random", "nan", "inf", "zero", "huge"]), st.data())
def test_spectral_path_returns_or_raises_input_error(msg: wire.Message, logits: str,
                                                     data: st.DataObject) -> None:
    path, worker = _spectral()
    try:
        outs = path.stream_stage("s").process(msg)
    except InputError:
        return
    assert list(outs) == [msg]
    try:
        rows, plan = worker.prepare(msg)
    except InputError:
        return
    assert rows.dtype == np.float32 and rows.shape[1:] == (1, 512)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    out = {"random": lambda: rng.normal(0, 3, rows.shape),
           "nan": lambda: np.full(rows.shape, np.nan), "inf": lambda: np.full(rows.shape, np.inf),
           "zero": lambda: np.zeros(rows.shape), "huge": lambda: np.full(rows.shape, 3e38)}[
        logits]().astype(np.float32)
    try:
        body = worker.finish(msg, out, plan)
    except InputError:
        return
    wire.encode(wire.result_message("spectral", msg.header, body), topic=True)  # it must travel


# -- the ECG per-stream stage, called without sockets -------------------------------------------


@functools.cache
def _ecg_signal() -> np.ndarray:
    from devices import cohort_subject, simulate_record

    return simulate_record(cohort_subject(0), 0, fs_hz=250.0, duration_s=12.0).signal


@st.composite
def ecg_chunks(draw: st.DrawFn) -> list[wire.Message]:
    """A stream's chunks: real ECG cut at random, with hostile seqs, clocks, rates, dtypes,
    payloads and extra keys mixed in."""
    signal = _ecg_signal()
    n = draw(st.integers(1, 10))
    seq = draw(st.sampled_from([0, 2**64 - 12, 5]))
    t_ns = draw(st.sampled_from([0, 2**63 - 10**9, -(2**63), 1_700_000_000 * 10**9]))
    fs = 250.0
    pos = 0
    out = []
    for _ in range(n):
        size = draw(st.sampled_from([62, 250, 1000, 1]) | st.integers(0, 1200))
        chunk = signal[pos:pos + size] if pos + size <= signal.size else signal[:size]
        pos = (pos + size) % max(1, signal.size - 1200)
        change = draw(st.sampled_from(["none"] * 6 + [
            "nan", "inf", "flat", "huge", "int16", "2d", "fs", "seq", "t_ns", "extras"]))
        extras: dict[str, Any] = {}
        if change == "nan":
            chunk = chunk.copy()
            chunk[::3] = np.nan
        elif change == "inf":
            chunk = np.full(chunk.shape, draw(st.sampled_from([np.inf, -np.inf, 1e308])))
        elif change == "flat":
            chunk = np.zeros(chunk.shape)
        elif change == "huge":
            chunk = chunk * 1e300
        elif change == "int16":
            chunk = (np.clip(chunk, -30, 30) * 1000).astype(np.int16)
            extras["gain"] = draw(st.sampled_from([1000.0, 1, 5e-324, 1e308, -1.0, 0, "x",
                                                   math.nan, True]))
        elif change == "2d":
            chunk = np.stack([chunk, chunk], axis=-1)
        elif change == "fs":
            fs = draw(st.sampled_from([100.0, 2048.0, 99.9, 1e-6, 1e12, 360.0, 250.0]))
        elif change == "seq":
            seq = draw(st.sampled_from([0, seq, seq + 2, seq + 10**7, 2**64 - 1]))
        elif change == "t_ns":
            t_ns = draw(st.sampled_from([-(2**63), 2**63 - 1, t_ns - 10**12, t_ns + 10**12]))
        elif change == "extras":
            extras = draw(st.dictionaries(st.sampled_from(["claim", "explain", "embed", "gain"]),
                                          values | long_texts, max_size=3))
        seq = min(seq, 2**64 - 1)
        try:
            msg = wire.data_message("ecg", "w", seq, chunk.astype(chunk.dtype), t_ns=t_ns,
                                    fs=fs, **extras)
            msg = wire.decode(wire.encode(msg), limits=LIMITS)
        except (WireError, OverflowError, ValueError, TypeError):
            continue  # not a decodable message: the wire tests cover those
        out.append(msg)
        seq += 1
        t_ns = min(t_ns + round(size * 4e6), 2**63 - 1)
    return out


@PATHS
@given(ecg_chunks())
def test_ecg_stream_stage_returns_or_raises_input_error(chunks: list[wire.Message]) -> None:
    from stream.paths.ecg.stages import EcgPath

    stage = EcgPath(templates=Path("unused.sqlite")).stream_stage("w")
    for msg in chunks:
        try:
            outs = stage.process(msg)
        except InputError:
            continue
        for out in outs:  # each output travels: encoded, and a data message decodes
            if out.kind == "ecg":
                wire.decode(wire.encode(out))
            else:
                assert out.kind == "result.ecg"
                wire.encode(out, topic=True)
    stage.flush()


# -- the codec receiver -------------------------------------------------------------------------


def test_codec_receiver_counts_the_killer_packet() -> None:
    from engines.codec.codec import load_codec
    from stream.paths.codec.receiver import CodecReceiver

    try:
        codec = load_codec("wideband", backend="eager")
    except Exception as exc:  # no shipped codec weights here
        pytest.skip(f"codec not loadable: {exc}")

    class Sink:
        def write(self, block: np.ndarray) -> None:
            pass

        def close(self) -> None:
            pass

    with codec:
        rx = CodecReceiver(codec, Sink(), jitter_ms=0, stream="link")
        header = {"v": 1, "kind": "codec", "stream": "link", "seq": 0, "t_ns": 0,
                  "dtype": "uint8", "shape": [0, 2**63], "fs": 16000.0}
        rx.receive([msgpack.packb(header), b""], now=0.0)
        header["shape"] = [0, 2**40, 2**40]
        rx.receive([msgpack.packb(header), b""], now=0.0)
        rx.play_due(now=1.0)
        rx.finish()
        assert rx.stats.errors == {"oversize": 2}


# -- live: real processes, real sockets ---------------------------------------------------------


def _ecg_or_skip() -> None:
    from engines.ecg.specs import ECG_SPECS

    if not ECG_SPECS["embedding"].weights_path.exists():
        pytest.skip("no shipped ECG embedding weights")


def _check(report: dict[str, Any]) -> None:
    assert report["service_running"], report
    assert report["crashed_stages"] == [], report
    assert report["unexplained"] == 0, report
    assert report["received"] == report["sent"], report
    if report["path"] == "spectral":  # one answer per message
        assert report["answered"] == report["sent"], report


@pytest.mark.parametrize(("messages", "seed"), [
    (300, 1),
    pytest.param(20_000, 2, marks=pytest.mark.slow, id="long"),
])
@pytest.mark.parametrize("path", ["spectral", "ecg"])
def test_live_fuzz(path: str, messages: int, seed: int, weights: Path, tmp_path: Path) -> None:
    if path == "ecg":
        _ecg_or_skip()
    report = live_fuzz(LiveFuzzConfig(path=path, messages=messages, seed=seed, weights=weights,
                                      workdir=tmp_path))
    _check(report)
