"""The ECG path's two halves on arrays, without sockets: the per-stream stage (chunks in, beats
and status results out) and the engine worker (embeddings in, decisions out)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from devices import cohort_subject, simulate_record
from engines.ecg.frontend import BEAT_SAMPLES
from engines.ecg.matcher import Matcher
from engines.ecg.templates import TemplateStore
from stream.errors import InputError
from stream.paths.ecg.stages import (
    EcgPath,
    EcgStreamStage,
    EcgWorker,
    pack_explanation,
    unpack_explanation,
)
from stream.wire import Message, data_message

FS = 250.0
T0 = 1_700_000_000_000_000_000


def _record(seconds: float = 20.0, subject: int = 0, fs: float = FS) -> np.ndarray:
    return simulate_record(cohort_subject(subject), 1, fs_hz=fs, duration_s=seconds).signal


def _chunks(x: np.ndarray, size: int, *, fs: float = FS, seq0: int = 0, t0: int = T0,
            stream: str = "w1", **extra: object) -> list[Message]:
    return [
        data_message("ecg", stream, seq0 + k, x[i:i + size], t_ns=t0 + round(i * 1e9 / fs),
                     fs=fs, **extra)
        for k, i in enumerate(range(0, len(x), size))
    ]


def _run(stage: EcgStreamStage, msgs: list[Message]) -> list[Message]:
    out: list[Message] = []
    for msg in msgs:
        out.extend(stage.process(msg))
    return out


def _beats(out: list[Message]) -> list[Message]:
    return [m for m in out if m.kind == "ecg"]


def _statuses(out: list[Message]) -> list[str]:
    return [m.payload["status"] for m in out if m.kind == "result.ecg"]


def test_beats_do_not_depend_on_chunking() -> None:
    x = _record(16.0)
    runs = []
    for size in (7, 250, 10_000):
        beats = _beats(_run(EcgStreamStage("w1"), _chunks(x, size)))
        runs.append([(m.header["r_t_ns"], m.header["end_t_ns"], m.payload.tobytes())
                     for m in beats])
    assert len(runs[0]) > 10
    assert runs[0] == runs[1] == runs[2]


def test_beat_messages_carry_timing_and_stream_clock() -> None:
    record = simulate_record(cohort_subject(0), 1, fs_hz=FS, duration_s=12.0)
    out = _run(EcgStreamStage("w1"), _chunks(record.signal, 62))
    beats = _beats(out)
    true_ns = T0 + np.round(record.r_peaks * 1e9 / FS).astype(np.int64)
    prompt = 0
    for m in beats:
        h = m.header
        assert m.payload.shape == (BEAT_SAMPLES,) and m.payload.dtype == np.float32
        assert h["fs"] == 256.0 and h["quality"] == "ok" and h["epoch"] == 1
        assert h["r_t_ns"] < h["end_t_ns"] <= h["t_ns"]  # t_ns: end of the completing chunk
        assert np.min(np.abs(true_ns - h["r_t_ns"])) < 20e6  # within 20 ms of the true R
        # Out of the detector's 2 s learning phase, a beat leaves with the chunk that
        # completes it (search-back detections come later).
        prompt += h["r_t_ns"] > T0 + 3e9 and h["t_ns"] - h["end_t_ns"] < 62 * 1e9 / FS
    assert prompt >= len(beats) - 5
    assert [m.header["beat"] for m in beats] == list(range(1, len(beats) + 1))


@pytest.mark.parametrize(
    ("payload", "extra", "code"),
    [
        (np.zeros((10, 2), np.float32), {}, "bad_shape"),
        (np.zeros(0, np.float32), {}, "empty"),
        (np.zeros(70_000, np.float32), {}, "too_long"),
        (np.zeros(10, np.float32), {"fs": 50.0}, "bad_fs"),
        (np.zeros(10, np.float32), {"claim": 7}, "bad_field"),
        (np.zeros(10, np.float32), {"explain": "yes"}, "bad_field"),
        (np.zeros(10, np.int16), {"gain": -1}, "bad_field"),
    ],
)
def test_bad_chunks_are_refused_and_leave_the_stream_alone(
    payload: np.ndarray, extra: dict[str, object], code: str
) -> None:
    x = _record(8.0)
    good = _chunks(x, 250)
    stage = EcgStreamStage("w1")
    _run(stage, good[:10])
    fs = float(extra.pop("fs", FS))  # type: ignore[arg-type]
    bad = data_message("ecg", "w1", 10, payload, t_ns=T0, fs=fs, **extra)
    with pytest.raises(InputError) as info:
        stage.process(bad)
    assert info.value.code == code and info.value.seq == 10
    # The refused chunk used no seq: the next good chunk (seq 10) continues without a gap.
    out = _run(stage, good[10:])
    assert _statuses(out) == []
    assert stage.epoch == 1


def test_seq_gap_sample_rate_change_restart_and_duplicates() -> None:
    x = _record(40.0)
    msgs = _chunks(x, 250)
    stage = EcgStreamStage("w1")
    _run(stage, msgs[:20])
    with pytest.raises(InputError, match="stale_seq"):
        stage.process(msgs[19])  # a duplicate
    out = _run(stage, msgs[23:40])  # seq 20..22 lost on the way
    assert _statuses(out)[0] == "gap" and stage.epoch == 2
    assert "3 chunk(s) lost" in out[0].payload["detail"]
    assert _beats(out), "beats resume after the detector relearns"
    assert all(m.header["epoch"] == 2 for m in _beats(out))
    x500 = _record(6.0, fs=500.0)
    out = _run(stage, _chunks(x500, 500, fs=500.0, seq0=40, t0=T0 + 10**10))
    assert _statuses(out)[0] == "fs_changed" and stage.epoch == 3
    out = _run(stage, _chunks(x500, 500, fs=500.0, seq0=0, t0=T0 + 10**11))
    assert _statuses(out)[0] == "restart" and stage.epoch == 4


def test_integer_counts_with_gain_equal_millivolts() -> None:
    x = _record(10.0)
    counts = np.round(x * 200).astype(np.int16)
    as_mv = _beats(_run(EcgStreamStage("a"), _chunks(counts / 200.0, 250)))
    as_counts = _beats(_run(EcgStreamStage("b"), _chunks(counts, 250, gain=200)))
    assert len(as_mv) == len(as_counts) > 5
    for a, b in zip(as_mv, as_counts, strict=True):
        np.testing.assert_allclose(a.payload, b.payload, atol=1e-5)


def test_flat_and_nan_signal_report_status_never_silence() -> None:
    x = _record(16.0).astype(np.float64)
    x[2000:2500] = np.nan  # a 2 s NaN burst
    out = _run(EcgStreamStage("w1"), _chunks(x, 250))
    assert "nan" in _statuses(out)
    nan_beats = [m for m in _beats(out) if m.header["quality"] == "nan"]
    assert nan_beats and all(m.header["quality"] in ("ok", "nan") for m in _beats(out))
    assert _statuses(out)[-1] == "ok"  # and the recovery is reported
    flat = _run(EcgStreamStage("f"), _chunks(np.zeros(2500, np.float32), 250))
    assert set(_statuses(flat)) <= {"flat", "lead_off"} and len(_statuses(flat)) >= 3
    assert not _beats(flat)
    for m in flat:
        assert m.payload["decision"] == "uncertain" and m.payload["identity"] is None


def test_clipped_lead_is_reported_saturated() -> None:
    x = _record(12.0)
    clipped = np.clip(x, None, 0.5 * float(x.max()))  # an amplifier rail cuts the R peaks
    out = _run(EcgStreamStage("w1"), _chunks(clipped, 250))
    assert "saturated" in _statuses(out)
    assert any(m.header["quality"] == "saturated" for m in _beats(out))
    assert all(m.header["quality"] != "ok" for m in _beats(out) if m.header["beat"] > 3)


def test_inverted_lead_is_flipped_back() -> None:
    x = _record(16.0)
    upright = _beats(_run(EcgStreamStage("a"), _chunks(x, 250)))
    flipped = _beats(_run(EcgStreamStage("b"), _chunks(-x, 250)))
    late = [m for m in flipped if m.header["beat"] > 10]
    assert late and all(m.header["inverted"] for m in late)
    a = {m.header["r_t_ns"]: m.payload for m in upright}
    for m in late:
        if m.header["r_t_ns"] in a:
            np.testing.assert_allclose(m.payload, a[m.header["r_t_ns"]], atol=1e-4)


def test_claim_and_flags_travel_with_each_beat() -> None:
    out = _run(EcgStreamStage("w1"), _chunks(_record(8.0), 250, claim="alice", explain=True))
    beats = _beats(out)
    assert beats and all(m.header["claim"] == "alice" and m.header["explain"] for m in beats)
    assert all("embed" not in m.header for m in beats)


# ---------------------------------------------------------------------------------------------
# Worker


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


class _FixedEngine:
    """Returns the embedding queued for the next row (what the real model would compute)."""

    def __init__(self) -> None:
        self.next: list[np.ndarray] = []

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        return np.stack([self.next.pop(0) for _ in range(rows.shape[0])])


def _beat_msg(stream: str = "w1", epoch: int = 1, quality: str = "ok", **extra: object
              ) -> Message:
    return data_message("ecg", stream, 0, np.zeros(BEAT_SAMPLES, np.float32), t_ns=T0, fs=256.0,
                        r_t_ns=T0 - 10**8, end_t_ns=T0, beat=1, epoch=epoch, quality=quality,
                        inverted=False, rr_s=0.8, **extra)


@pytest.fixture
def worker(tmp_path: Path) -> tuple[EcgWorker, _FixedEngine, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    users = {name: _unit(rng.normal(size=64)) for name in ("alice", "bob")}
    store = TemplateStore(tmp_path / "users.sqlite").open()
    for name, template in users.items():
        store.enroll(name, template[None, :], model_id="m1")
    engine = _FixedEngine()
    w = EcgWorker(engine, matcher=Matcher(0.8, 0.5, fuse_beats=3), store=store, model_id="m1")
    yield w, engine, users
    w.close()


def _serve(w: EcgWorker, engine: _FixedEngine, msg: Message, embedding: np.ndarray
           ) -> dict[str, object]:
    engine.next.append(embedding)
    rows, plan = w.prepare(msg)
    return w.finish(msg, w.run(rows), plan)


def test_worker_identifies_verifies_and_fuses(worker) -> None:  # type: ignore[no-untyped-def]
    w, engine, users = worker
    body = _serve(w, engine, _beat_msg(claim="alice"), users["alice"])
    assert body["identity"] == "alice" and body["decision"] == "accept"
    assert body["verified"] is True and "claim_score" not in body
    assert body["hr_bpm"] == 75.0
    assert body["fused"] == {"beats": 1, **{k: body[k] for k in (
        "identity", "score", "decision", "reason", "claim", "verified")}}
    body = _serve(w, engine, _beat_msg(claim="alice"), users["bob"])  # bob wears alice's strap
    assert body["identity"] == "bob" and body["verified"] is False
    fused = body["fused"]
    assert isinstance(fused, dict) and fused["beats"] == 2
    stranger = _unit(np.random.default_rng(5).normal(size=64))
    body = _serve(w, engine, _beat_msg(), stranger)
    assert body["identity"] is None and body["decision"] == "reject"
    unknown = _serve(w, engine, _beat_msg(claim="carol"), users["alice"])  # not enrolled
    failed = _serve(w, engine, _beat_msg(claim="bob"), users["alice"])  # enrolled, not him
    for body in (unknown, failed):  # answered alike: claims cannot enumerate the users
        assert body["verified"] is False and "claim_score" not in body
    assert {k: type(v) for k, v in unknown.items()} == {k: type(v) for k, v in failed.items()}


def test_worker_never_matches_a_bad_beat_and_restarts_fusion(worker) -> None:  # type: ignore[no-untyped-def]
    w, engine, users = worker
    _serve(w, engine, _beat_msg(), users["alice"])
    body = _serve(w, engine, _beat_msg(quality="noisy", claim="alice"), users["alice"])
    assert (body["decision"], body["reason"], body["identity"]) == ("uncertain", "noisy", None)
    assert body["verified"] is None
    assert isinstance(body["fused"], dict) and body["fused"]["beats"] == 1  # not added
    body = _serve(w, engine, _beat_msg(epoch=2), users["alice"])  # the stream restarted
    assert isinstance(body["fused"], dict) and body["fused"]["beats"] == 1


def test_worker_sees_users_enrolled_by_another_process(worker, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    w, engine, users = worker
    carol = _unit(np.random.default_rng(9).normal(size=64))
    with TemplateStore(tmp_path / "users.sqlite") as other:
        other.enroll("carol", carol[None, :], model_id="m1")
    w._next_check = 0.0  # the next beat looks at the store
    body = _serve(w, engine, _beat_msg(embed=True), carol)
    assert body["identity"] == "carol"
    assert np.frombuffer(body["embedding"], "<f4").shape == (64,)  # type: ignore[arg-type]
    assert body["model"] == "m1"


def test_worker_without_users_is_uncertain(tmp_path: Path) -> None:
    engine = _FixedEngine()
    store = TemplateStore(tmp_path / "empty.sqlite").open()
    w = EcgWorker(engine, matcher=Matcher(0.8, 0.5), store=store, model_id="m1")
    body = _serve(w, engine, _beat_msg(), _unit(np.ones(64)))
    assert (body["decision"], body["reason"]) == ("uncertain", "no_users")
    w.close()


def test_explanations_pack_into_bytes_and_back() -> None:
    rng = np.random.default_rng(1)
    spectrogram, heat = rng.normal(size=(17, 49)), rng.random((17, 49))
    packed = pack_explanation(spectrogram, heat, target="alice", score=0.9)
    grey, back = unpack_explanation(packed)
    assert grey.shape == back.shape == (17, 49)
    np.testing.assert_allclose(back, heat, atol=1 / 255)
    assert grey.min() == 0.0 and grey.max() == 1.0


def test_path_is_sticky_and_validates() -> None:
    path = EcgPath(templates=Path("/tmp/x.sqlite"))
    assert path.sticky_streams and path.input_kind == "ecg" and path.result_kind == "result.ecg"
    with pytest.raises(ValueError, match="fuse_beats"):
        EcgPath(templates=Path("/tmp/x.sqlite"), fuse_beats=0)
    with pytest.raises(ValueError, match="embedding"):
        EcgPath(templates=Path("/tmp/x.sqlite"), model="cnn")


def test_cli_model_names_match_the_specs() -> None:
    # The CLI spells the model keys out so `sigstream --help` does not load torch.
    from engines.ecg.specs import ECG_SPECS
    from engines.roi.specs import ROI_SPECS
    from stream.paths.ecg.commands import ECG_MODELS
    from stream.paths.spectral.commands import ROI_MODELS

    assert set(ECG_MODELS) == set(ECG_SPECS) and set(ROI_MODELS) == set(ROI_SPECS)
