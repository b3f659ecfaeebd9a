"""Live CT slices through the real service (``sigstream run ct``): slices of two series pushed
over ZeroMQ come back denoised, as the batch denoiser computes them; bad slices are answered
with an error, and every slice is accounted for."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from service_client import Client
from volume_files import slice_hu

from engines.ct.denoise import CtDenoiser
from engines.ct.specs import CT_SPECS
from stream.paths.volumes import SliceSettings
from stream.service import Service, ServiceConfig

TILE = 64


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ct") / "red_cnn.pt"
    torch.manual_seed(0)
    torch.save(CT_SPECS["red_cnn"].build().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def service(weights: Path) -> Iterator[Service]:
    config = ServiceConfig(
        path="ct", ingest="tcp://127.0.0.1:*", publish="tcp://127.0.0.1:*", backend="eager",
        model="red_cnn", weights=weights, settings=SliceSettings(tile_px=TILE), workers=1,
        max_batch=4, deadline_ms=60_000, stats_interval_s=0.1, stop_timeout_s=20.0,
    )
    with Service(config) as svc:
        yield svc


def _denoised(weights: Path, hu: np.ndarray) -> np.ndarray:
    shape = (1, TILE, TILE)
    spec = dataclasses.replace(CT_SPECS["red_cnn"], weights=str(weights), input_shape=shape,
                               output_shape=shape)
    with CtDenoiser(spec=spec, backend="eager") as denoiser:
        return denoiser.denoise(hu)


def test_slices_of_two_series_come_back_denoised(service: Service, weights: Path) -> None:
    stored = {z: np.round(np.kron(slice_hu(z), np.ones((3, 3))) + 1024).astype(np.int16)
              for z in range(3)}  # 96² slices: four 64² tiles each
    hu = np.float32(slice_hu(7)[:, :48])  # a 32x48 float32 slice: one padded tile
    client = Client(service.bound_ingest, service.bound_publish)
    try:
        for z, pixels in stored.items():
            client.send("series-a", z, pixels, kind="ct-slice", t_ns=0, slope=1.0,
                        intercept=-1024.0)
        client.send("series-b", 0, hu, kind="ct-slice", t_ns=0)
        answers = client.settle(service, {"series-a": 3, "series-b": 1})
    finally:
        client.close()
    by_key = {(m.stream, m.seq): m for m in answers}
    assert set(by_key) == {("series-a", 0), ("series-a", 1), ("series-a", 2), ("series-b", 0)}
    for z, pixels in stored.items():
        body = by_key["series-a", z].payload
        assert body["dtype"] == "int16" and body["shape"] == [96, 96]
        assert (body["slope"], body["intercept"]) == (1.0, -1024.0)
        got = np.frombuffer(body["pixels"], np.int16).reshape(96, 96) - 1024.0
        want = _denoised(weights, pixels.astype(np.float32) - 1024.0)
        np.testing.assert_allclose(got, want, atol=0.5 + 1e-3)  # one rescale step, rounded
    body = by_key["series-b", 0].payload
    assert body["dtype"] == "float32" and "slope" not in body
    got = np.frombuffer(body["pixels"], np.float32).reshape(hu.shape)
    np.testing.assert_allclose(got, _denoised(weights, hu), atol=1e-3)


def test_bad_slices_are_answered_and_counted(service: Service) -> None:
    nan = np.zeros((32, 32), np.float32)
    nan[1, 2] = np.nan
    bad = {
        0: (np.zeros((32, 32), np.int16), {}),  # no rescale
        1: (np.zeros((32, 32), np.int16), {"slope": 0.0, "intercept": 0.0}),
        2: (np.zeros((2, 32, 32), np.float32), {}),
        3: (np.zeros((32, 32), np.float64), {}),
        4: (nan, {}),
        5: (np.zeros((4096, 1), np.float32), {}),
    }
    client = Client(service.bound_ingest, service.bound_publish)
    try:
        for seq, (pixels, header) in bad.items():
            client.send("series-x", seq, pixels, kind="ct-slice", t_ns=0, **header)
        client.send("series-x", 6, np.zeros((32, 32), np.float32), kind="spectrum", t_ns=0)
        answers = client.settle(service, {"series-x": 7})
    finally:
        client.close()
    codes = {m.seq: m.payload["code"] for m in answers if m.stream == "series-x"}
    assert codes == {0: "bad_field", 1: "bad_field", 2: "bad_shape", 3: "bad_dtype",
                     4: "input_contract", 5: "too_long", 6: "wrong_kind"}
    summary = service.summary()["series-x"]
    assert summary.errors_total == 7 and summary.delivered == 0
