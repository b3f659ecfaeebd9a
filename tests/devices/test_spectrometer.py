"""Spectrometer sources: pacing, determinism, file replay and its errors, adapter lifecycle."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from devices.frames import DeviceError, EndOfStream, Frame, FrameSource, Pacer, SourceFileError
from devices.spectrometer import (
    SpectrometerAdapter,
    SpectrometerSimConfig,
    SpectrometerSimulator,
    SpectrumReplay,
    SpectrumReplayConfig,
    load_spectra,
)


def _drain(source: FrameSource, timeout_s: float | None = None) -> list[Frame]:
    frames = []
    with source:
        while True:
            try:
                frame = source.read(timeout_s)
            except EndOfStream:
                return frames
            if frame is not None:
                frames.append(frame)


# -- simulator ----------------------------------------------------------------------------------


def test_simulator_paces_by_absolute_deadlines() -> None:
    rate_hz, n = 200.0, 40
    sim = SpectrometerSimulator(SpectrometerSimConfig(rate_hz=rate_hz, count=n, length=256))
    start = time.monotonic()
    frames = _drain(sim)
    elapsed = time.monotonic() - start
    assert len(frames) == n
    expected = (n - 1) / rate_hz
    # Never early (how late depends on the machine's load, so that is not bounded here).
    assert expected - 0.002 <= elapsed
    # Capture times sit exactly on the grid: 1/rate apart (rounding to 1 ns at most).
    gaps = np.diff([f.t_ns for f in frames])
    assert np.all(np.abs(gaps - 1e9 / rate_hz) <= 1)
    assert abs(frames[0].t_ns - time.time_ns()) < 5e9
    assert all(f.data.shape == (256,) and f.data.dtype == np.float32 for f in frames)
    assert all(f.fs is None for f in frames)


def test_simulator_does_not_drift_after_a_slow_reader() -> None:
    rate_hz = 100.0
    sim = SpectrometerSimulator(SpectrometerSimConfig(rate_hz=rate_hz, count=30))
    with sim:
        first = sim.read()
        assert first is not None
        t0 = time.monotonic()
        time.sleep(0.05)  # the reader stalls for 5 periods
        # The schedule did not move: what fell due during the stall is there at once (a
        # longer stall on a loaded machine only makes more of it due).
        caught_up = [sim.read(0) for _ in range(4)]
        frames = caught_up + [sim.read() for _ in range(25)]
        elapsed = time.monotonic() - t0
    assert all(f is not None for f in frames)
    # Never early: 29 more frames end no sooner than 29 periods after the first one.
    assert 29 / rate_hz - 0.012 <= elapsed
    t = [first.t_ns] + [f.t_ns for f in frames if f is not None]
    assert np.all(np.abs(np.diff(t) - 1e9 / rate_hz) <= 1)


def test_simulator_timeout_returns_none_then_the_frame() -> None:
    sim = SpectrometerSimulator(SpectrometerSimConfig(rate_hz=1.0, count=2))
    with sim:
        assert sim.read(0) is not None  # frame 0 is due at open
        assert sim.read(0.05) is None  # frame 1 is due 1 s after open
        assert sim.next_due_ns is not None
        assert sim.read(5.0) is not None
        with pytest.raises(EndOfStream):
            sim.read(0)
        assert sim.next_due_ns is None
    assert sim.frames_read == 2


def test_simulator_is_deterministic_per_seed_and_instrument() -> None:
    def spectra(**kw: int) -> np.ndarray:
        cfg = SpectrometerSimConfig(rate_hz=1e6, count=20, batch=8, **kw)
        return np.stack([f.data for f in _drain(SpectrometerSimulator(cfg))])

    a = spectra(seed=3, instrument=0)
    np.testing.assert_array_equal(a, spectra(seed=3, instrument=0))
    assert not np.array_equal(a, spectra(seed=3, instrument=1))
    assert not np.array_equal(a, spectra(seed=4, instrument=0))
    assert a.min() >= 0.0 and a.max() <= 1.0


@pytest.mark.parametrize(
    "kwargs",
    [{"rate_hz": 0.0}, {"rate_hz": float("nan")}, {"batch": 0}, {"count": -1}, {"length": 4}],
)
def test_simulator_config_is_validated(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        SpectrometerSimConfig(**kwargs)


# -- replay -------------------------------------------------------------------------------------


@pytest.fixture
def spectra() -> np.ndarray:
    return np.random.default_rng(0).random((6, 33)).astype(np.float32)


def test_replay_npy(tmp_path: Path, spectra: np.ndarray) -> None:
    path = tmp_path / "run.npy"
    np.save(path, spectra)
    replay = SpectrumReplay(SpectrumReplayConfig(path=path, rate_hz=500.0))
    frames = _drain(replay)
    np.testing.assert_array_equal(np.stack([f.data for f in frames]), spectra)
    assert replay.rows == 6 and replay.length == 33
    assert np.all(np.abs(np.diff([f.t_ns for f in frames]) - 2e6) <= 1)


def test_replay_csv_with_header_comments_and_count_loop(
    tmp_path: Path, spectra: np.ndarray
) -> None:
    path = tmp_path / "run.csv"
    header = ",".join(f"w{i}" for i in range(spectra.shape[1]))
    rows = "\n".join(",".join(repr(float(v)) for v in row) for row in spectra)
    path.write_text(f"# a recorded run\n{header}\n{rows}\n\n")
    frames = _drain(SpectrumReplay(SpectrumReplayConfig(path=path, rate_hz=1e4, count=9,
                                                        loop=True)))
    got = np.stack([f.data for f in frames])
    assert got.dtype == np.float32 and got.shape == (9, 33)
    np.testing.assert_array_equal(got[:6], spectra)
    np.testing.assert_array_equal(got[6:], spectra[:3])


def test_csv_numeric_header_is_skipped_with_skip_rows(tmp_path: Path) -> None:
    path = tmp_path / "run.csv"
    path.write_text("428.0,429.0,431.0\n1,2,3\n4,5,6\n")
    assert load_spectra(path).shape == (3, 3)
    np.testing.assert_array_equal(load_spectra(path, skip_rows=1), [[1, 2, 3], [4, 5, 6]])


def test_whitespace_text_file(tmp_path: Path) -> None:
    path = tmp_path / "run.txt"
    path.write_text("1 2 3\n4\t5 6\n")
    np.testing.assert_array_equal(load_spectra(path), [[1, 2, 3], [4, 5, 6]])


def test_missing_file(tmp_path: Path) -> None:
    replay = SpectrumReplay(SpectrumReplayConfig(path=tmp_path / "nope.npy"))  # no I/O yet
    with pytest.raises(FileNotFoundError, match="nope.npy"):
        replay.open()


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("ragged.csv", "1,2,3\n4,5\n", "ragged rows: line 2 has 2 values"),
        ("text.csv", "1,2,3\n4,x,6\n", "line 2: 'x' is not a number"),
        ("nan.csv", "1,2,3\n4,nan,6\n", "spectrum 1 holds NaN"),
        ("empty.csv", "\n# nothing\n", "no spectra"),
        ("header.csv", "a,b,c\n", "a header and no spectra"),
        ("binary.csv", b"\xff\xfe\x00\x01", "not a UTF-8 text file"),
        ("corrupt.npy", b"\x93NUMPY garbage", "not a valid .npy file"),
        ("data.json", "[[1, 2]]", "unsupported file type"),
    ],
)
def test_bad_text_and_npy_files(write_file: Callable[[str, str | bytes], Path], name: str,
                                content: str | bytes, match: str) -> None:
    with pytest.raises(SourceFileError, match=match):
        SpectrumReplay(SpectrumReplayConfig(path=write_file(name, content))).open()


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.array([np.zeros(3), np.zeros(2)], dtype=object), "Python objects"),
        (np.zeros(5), "expected a 2-D array"),
        (np.zeros((2, 3, 4)), "expected a 2-D array"),
        (np.zeros((0, 4)), "no spectra"),
        (np.zeros((2, 3), dtype=complex), "not a real number type"),
        (np.array([[1.0, np.inf]]), "spectrum 0 holds NaN or inf"),
    ],
)
def test_bad_npy_arrays(tmp_path: Path, array: np.ndarray, match: str) -> None:
    path = tmp_path / "bad.npy"
    np.save(path, array, allow_pickle=True)
    with pytest.raises(SourceFileError, match=match):
        load_spectra(path)


def test_truncated_npy(tmp_path: Path, spectra: np.ndarray) -> None:
    path = tmp_path / "cut.npy"
    np.save(path, spectra)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(SourceFileError, match="not a valid .npy file"):
        load_spectra(path)


# -- adapter lifecycle --------------------------------------------------------------------------


class _FakeDriver(SpectrometerAdapter):
    """A hardware driver as a user would write one: three spectra, then the instrument is gone."""

    def __init__(self, shape: tuple[int, ...] = (8,)) -> None:
        super().__init__()
        self.shape = shape
        self.opened = 0
        self.closed_calls = 0

    def _open(self) -> None:
        self.opened += 1

    def _read(self, timeout_s: float | None) -> Frame | None:
        if self.frames_read >= 3:
            raise EndOfStream
        return Frame(t_ns=time.time_ns(), data=np.zeros(self.shape, np.float32))

    def _close(self) -> None:
        self.closed_calls += 1


def test_adapter_lifecycle_and_close_twice() -> None:
    driver = _FakeDriver()
    with pytest.raises(DeviceError, match="not open"):
        driver.read()
    with driver as same:
        assert same is driver and driver.is_open
        driver.open()  # opening an open source does nothing
        assert len(_drain_open(driver)) == 3
    assert driver.closed and driver.opened == 1 and driver.closed_calls == 1
    driver.close()
    driver.close()
    assert driver.closed_calls == 1
    with pytest.raises(DeviceError, match="closed"):
        driver.open()
    with pytest.raises(DeviceError, match="not open"):
        driver.read()


def _drain_open(source: FrameSource) -> list[Frame]:
    frames = []
    while True:
        try:
            frame = source.read(0.0)
        except EndOfStream:
            return frames
        if frame is not None:
            frames.append(frame)


def test_adapter_closes_on_exception_and_never_opened_close_is_a_no_op() -> None:
    driver = _FakeDriver()
    with pytest.raises(RuntimeError, match="boom"), driver:
        raise RuntimeError("boom")
    assert driver.closed_calls == 1
    unopened = _FakeDriver()
    unopened.close()
    unopened.close()
    assert unopened.closed_calls == 0 and unopened.closed


def test_adapter_rejects_a_frame_that_is_not_a_spectrum() -> None:
    with _FakeDriver(shape=(2, 4)) as driver, pytest.raises(DeviceError, match="1-D"):
        driver.read()


def test_simulator_close_twice_and_reopen_refused() -> None:
    sim = SpectrometerSimulator(SpectrometerSimConfig(rate_hz=1e3, count=1))
    with sim:
        assert sim.read() is not None
    sim.close()
    with pytest.raises(DeviceError):
        sim.open()


def test_pacer_rejects_bad_rates_and_unstarted_use() -> None:
    with pytest.raises(ValueError):
        Pacer(-1.0)
    with pytest.raises(RuntimeError):
        Pacer(10.0).deadline_ns(0)


def test_replay_bounds_directories_and_memory_mapped_npy(tmp_path: Path) -> None:
    with pytest.raises(SourceFileError, match="is a directory"):
        SpectrumReplay(SpectrumReplayConfig(path=tmp_path)).open()
    spectra = np.random.default_rng(0).uniform(0, 1, (20, 64))
    np.save(tmp_path / "run.npy", spectra)
    with pytest.raises(SourceFileError, match="over the"):
        SpectrumReplay(SpectrumReplayConfig(path=tmp_path / "run.npy", max_bytes=1000)).open()
    replay = SpectrumReplay(SpectrumReplayConfig(path=tmp_path / "run.npy", rate_hz=1e6))
    with replay:
        frames = [replay.read() for _ in range(20)]
    assert all(f is not None and f.data.dtype == np.float32 for f in frames)
    np.testing.assert_array_equal(np.stack([f.data for f in frames if f is not None]),
                                  spectra.astype(np.float32))
    (tmp_path / "long.csv").write_text("1,2\n" + "9" * 100_000 + "\n")
    with pytest.raises(SourceFileError, match="line 2 is longer"):
        load_spectra(tmp_path / "long.csv")
