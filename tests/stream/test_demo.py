"""The demo: the real fermentation run exported once, and a short end-to-end run."""

from __future__ import annotations

import importlib.util
import io
import time
from pathlib import Path

import numpy as np
import pytest

from stream.demo import FERMENTATION_SHAPE, export_fermentation_run, run_demo

needs_chemotools = pytest.mark.skipif(
    importlib.util.find_spec("chemotools") is None,
    reason="chemotools (the 'data' extra) is not installed: no real run to replay",
)


@needs_chemotools
def test_fermentation_run_is_exported_once(tmp_path: Path) -> None:
    path = export_fermentation_run(tmp_path / "runs")
    assert path == tmp_path / "runs" / "fermentation_test.npy"
    spectra = np.load(path)
    assert spectra.shape == FERMENTATION_SHAPE == (1629, 1047)
    assert spectra.dtype == np.float32 and np.isfinite(spectra).all()
    # The CSV's first row is the wavenumber axis (428.0, 429.0, ...), not a spectrum.
    assert spectra[0, 0] == np.float32(1.878788) and spectra[0, 1] == np.float32(1.185065)
    mtime = path.stat().st_mtime_ns
    time.sleep(0.01)
    assert export_fermentation_run(tmp_path / "runs") == path
    assert path.stat().st_mtime_ns == mtime  # reused, not written again


def _weights(tmp: Path) -> Path | None:
    from engines.roi.specs import ROI_SPECS
    from stream.paths.spectral.commands import DEFAULT_MODEL

    spec = ROI_SPECS[DEFAULT_MODEL]
    if spec.weights_path.is_file():
        return None
    import torch

    torch.manual_seed(0)
    path = tmp / f"roi_{DEFAULT_MODEL}_random.pt"
    torch.save(spec.build().state_dict(), path)
    return path


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    out = io.StringIO()
    status = run_demo(
        seconds=2.0, backend="eager", cache_dir=tmp_path / "engines", runs_dir=tmp_path / "runs",
        weights=_weights(tmp_path), instruments=2, out=out,
    )
    text = out.getvalue()
    assert status == 0, text
    assert "spectra/s" in text  # the live view
    summary = text[text.index("summary ("):]
    rows = {line.split()[0]: line.split() for line in summary.splitlines()[2:]
            if line.startswith(("inst-", "fermentation"))}
    expected = {"inst-1", "inst-2"}
    if importlib.util.find_spec("chemotools") is not None:
        expected.add("fermentation")
    assert set(rows) == expected
    for name, cols in rows.items():
        sent, results, errors, lost = map(int, cols[1:5])
        assert sent >= 30, name  # 2 s at 20/s
        assert results == sent and errors == 0 and lost == 0, cols
    assert "unexplained 0" in text
