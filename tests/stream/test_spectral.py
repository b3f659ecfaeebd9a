"""The spectral path's two halves on arrays, no sockets: the per-stream stage and the worker."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from stream.errors import InputError
from stream.paths.spectral.stages import (
    SPECTRAL_MAX_SAMPLES,
    SpectralPath,
    SpectralWorker,
    SpectrumStage,
)
from stream.wire import Message, data_message, decode, encode


def spectrum_msg(array: np.ndarray, *, stream: str = "inst-1", seq: int = 7) -> Message:
    """A message as a stage receives it: through the wire codec."""
    return decode(encode(data_message("spectrum", stream, seq, array)))


class LogitsEngine:
    """Stand-in engine: a logit of +5 wherever the window is above 0.5, else -5."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        assert batch.dtype == np.float32 and batch.shape[1:] == (1, 512)
        self.calls.append(batch.shape[0])
        return np.where(batch > 0.5, 5.0, -5.0).astype(np.float32)


@pytest.fixture
def worker() -> SpectralWorker:
    from engines.roi.detector import RoiDetector

    return SpectralWorker(LogitsEngine(), RoiDetector(), row_shape=(1, 512))


def peaked(length: int = 512, centre: int = 200) -> np.ndarray:
    x = np.full(length, 0.1, dtype=np.float32)
    x[centre - 5 : centre + 6] = np.hanning(11).astype(np.float32) + 0.1
    return x


# -- per-stream stage -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64", "int16", "uint8"])
def test_stage_forwards_a_1d_numeric_spectrum_unchanged(dtype: str) -> None:
    msg = spectrum_msg(np.arange(512).astype(dtype))
    out = SpectrumStage("inst-1").process(msg)
    assert len(out) == 1 and out[0] is msg  # the shard forwards the received frames
    assert SpectrumStage("inst-1").flush() == ()


@pytest.mark.parametrize(
    ("array", "code"),
    [
        (np.zeros((2, 256), np.float32), "bad_shape"),
        (np.zeros((), np.float32), "bad_shape"),
        (np.zeros(0, np.float32), "empty"),
        (np.zeros(SPECTRAL_MAX_SAMPLES + 1, np.uint8), "too_long"),
    ],
)
def test_stage_rejects_what_the_engines_cannot_serve(array: np.ndarray, code: str) -> None:
    with pytest.raises(InputError) as info:
        SpectrumStage("inst-1").process(spectrum_msg(array, seq=42))
    assert info.value.code == code
    assert (info.value.stream, info.value.seq) == ("inst-1", 42)


def test_stage_limit_is_configurable() -> None:
    stage = SpectralPath(max_samples=100).stream_stage("s")
    with pytest.raises(InputError, match="maximum 100") as info:
        stage.process(spectrum_msg(np.zeros(101, np.float32)))
    assert info.value.code == "too_long"


# -- worker half -----------------------------------------------------------------------------


def test_worker_prepare_run_finish(worker: SpectralWorker) -> None:
    msg = spectrum_msg(peaked())
    rows, plan = worker.prepare(msg)
    assert rows.shape == (1, 1, 512) and rows.dtype == np.float32
    body = worker.finish(msg, worker.run(rows), plan)
    assert set(body) == {"roi", "peaks"}
    assert len(body["roi"]) == 1
    start, end = body["roi"][0]
    assert start <= 200 < end
    assert body["peaks"] and abs(body["peaks"][0]["index"] - 200) <= 1


def test_worker_batches_rows_of_several_spectra(worker: SpectralWorker) -> None:
    msgs = [spectrum_msg(peaked(centre=c), seq=i) for i, c in enumerate((100, 300))]
    prepared = [worker.prepare(m) for m in msgs]
    rows = np.concatenate([r for r, _ in prepared])
    out = worker.run(rows)
    assert worker.engine.calls == [2]  # one engine call for both spectra
    for i, (msg, (_, plan)) in enumerate(zip(msgs, prepared, strict=True)):
        body = worker.finish(msg, out[i : i + 1], plan)
        assert body["peaks"][0]["index"] == pytest.approx((100, 300)[i], abs=1)


def test_worker_converts_integer_spectra(worker: SpectralWorker) -> None:
    counts = (peaked() * 1000).astype(np.int16)
    msg = spectrum_msg(counts)
    rows, plan = worker.prepare(msg)
    body = worker.finish(msg, worker.run(rows), plan)
    assert body["peaks"][0]["height"] > 100  # heights in the spectrum's own units (counts)


def test_worker_serves_other_lengths(worker: SpectralWorker) -> None:
    msg = spectrum_msg(peaked(length=1500, centre=1200))
    rows, plan = worker.prepare(msg)
    assert rows.shape[0] > 1
    body = worker.finish(msg, worker.run(rows), plan)
    assert any(s <= 1200 < e for s, e in body["roi"])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_stage_answers_non_finite_with_input_error(bad: float) -> None:
    # Checked once, at the door: the worker never sees it.
    x = peaked()
    x[3] = bad
    with pytest.raises(InputError) as info:
        SpectralPath().stream_stage("s9").process(spectrum_msg(x, stream="s9", seq=11))
    assert info.value.code == "input_contract"
    assert (info.value.stream, info.value.seq) == ("s9", 11)
    assert "non-finite" in info.value.reason


def test_worker_warm_up_runs_batch_one_and_max(worker: SpectralWorker) -> None:
    worker.warm_up(8)
    assert 1 in worker.engine.calls and 8 in worker.engine.calls


# -- the path object ---------------------------------------------------------------------


def test_path_declares_its_kinds_and_travels_to_processes() -> None:
    path = SpectralPath(model="cnn", max_samples=4096)
    assert (path.name, path.input_kind, path.result_kind) == (
        "spectral", "spectrum", "result.spectral"
    )
    clone = pickle.loads(pickle.dumps(path))
    assert clone == path
    assert isinstance(clone.stream_stage("a"), SpectrumStage)


def test_path_validates() -> None:
    with pytest.raises(ValueError):
        SpectralPath(max_samples=0)


def test_load_worker_with_the_eager_engine(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    from engines.roi.specs import ROI_SPECS

    weights = tmp_path / "roi_cnn_untrained.pt"
    torch.manual_seed(0)
    torch.save(ROI_SPECS["cnn"].build().state_dict(), weights)
    worker = SpectralPath(model="cnn", weights=weights).load_worker(
        backend="eager", max_batch=4, cache_dir=None, threads=1
    )
    try:
        msg = spectrum_msg(peaked())
        rows, plan = worker.prepare(msg)
        body = worker.finish(msg, worker.run(rows), plan)
        assert set(body) == {"roi", "peaks"}
    finally:
        worker.close()


def test_load_worker_unknown_model() -> None:
    with pytest.raises(ValueError, match="unknown ROI model"):
        SpectralPath(model="nope").load_worker(
            backend="eager", max_batch=4, cache_dir=None, threads=1
        )


def test_served_peak_model_reads_peaks_with_the_fit() -> None:
    """The default model (peak heads + joint fit) with its shipped weights: overlapping peaks
    found where they are, measured in the spectrum's units, with uncertainties and overlap."""
    pytest.importorskip("torch")
    from engines.roi.specs import ROI_SPECS

    path = SpectralPath()
    if not ROI_SPECS[path.model].weights_path.is_file():
        pytest.skip(f"no shipped weights for {path.model}")
    x = np.arange(512, dtype=np.float64)
    y = 10.0 + 0.01 * x
    for centre, fwhm, height in ((150.0, 8.0, 40.0), (161.0, 8.0, 25.0), (380.0, 5.0, 30.0)):
        y += height * np.exp(-4 * np.log(2) * ((x - centre) / fwhm) ** 2)
    y += np.random.default_rng(0).normal(0.0, 0.3, 512)
    worker = path.load_worker(backend="eager", max_batch=4, cache_dir=None, threads=1)
    try:
        msg = spectrum_msg(y.astype(np.float32))
        rows, plan = worker.prepare(msg)
        body = worker.finish(msg, worker.run(rows), plan)
    finally:
        worker.close()
    peaks = body["peaks"]
    assert [p["index"] for p in peaks] == pytest.approx([150, 161, 380], abs=1.0)
    assert [p["height"] for p in peaks] == pytest.approx([40, 25, 30], rel=0.15)
    assert [p["overlaps"] for p in peaks] == [True, True, False]
    assert all(0 < p["index_sd"] < 1 and 0 < p["height_sd"] < 5 for p in peaks)


def test_peak_fit_setting_is_checked() -> None:
    from stream.errors import ConfigError
    from stream.paths.spectral.commands import SpectralSettings

    assert SpectralSettings().peak_fit == "model"
    with pytest.raises(ConfigError, match="peak_fit"):
        SpectralSettings(peak_fit="gauss")
    with pytest.raises(ValueError, match="peak_fit"):
        SpectralPath(peak_fit="gauss")
