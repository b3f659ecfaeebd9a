"""docs/examples/client.py — and the client printed in docs/protocol.md — against a real service.

Only the protocol is under test here, not what the model learned: when the shipped weights are
not there (yet), the service runs a randomly initialised model of the same architecture.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.service import Service, ServiceConfig

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "docs" / "examples" / "client.py"
PROTOCOL = ROOT / "docs" / "protocol.md"


def _weights(tmp: Path) -> Path | None:
    from engines.roi.specs import ROI_SPECS

    spec = ROI_SPECS["resnet_unet"]
    if spec.weights_path.is_file():
        return None  # the shipped ones
    import torch

    torch.manual_seed(0)
    path = tmp / "roi_resnet_unet_random.pt"
    torch.save(spec.build().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("service")
    config = ServiceConfig(
        path="spectral", ingest="tcp://127.0.0.1:*", publish="tcp://127.0.0.1:*",
        backend="eager", model="resnet_unet", weights=_weights(tmp), cache_dir=tmp / "cache",
        start_timeout_s=120.0,
    )
    with Service(config) as svc:
        yield svc


def _run(script: Path, service: Service) -> str:
    proc = subprocess.run(
        [sys.executable, str(script), service.bound_ingest, service.bound_publish],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _check_result_line(stdout: str) -> None:
    topic, word, seq, body = stdout.strip().split(" ", 3)
    assert (topic, word, seq) == ("result.spectral/client-1", "seq", "0")
    result = ast.literal_eval(body)
    assert set(result) == {"roi", "peaks"}
    for start, end in result["roi"]:
        assert 0 <= start < end <= 512
    for peak in result["peaks"]:
        assert set(peak) == {"index", "height", "area", "width", "start", "end"}
        assert peak["start"] <= peak["index"] < peak["end"]


def test_example_client_prints_a_result(service: Service) -> None:
    _check_result_line(_run(CLIENT, service))


def test_the_client_in_protocol_md_runs(service: Service, tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", PROTOCOL.read_text(), flags=re.S)
    assert len(blocks) == 1
    code = blocks[0]
    assert "import msgpack, zmq" in code and "numpy" not in code
    script = tmp_path / "doc_client.py"
    script.write_text(code)
    _check_result_line(_run(script, service))
