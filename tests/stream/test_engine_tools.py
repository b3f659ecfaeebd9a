"""``sigstream engines build|list``: ahead-of-time builds land in the cache the services use,
a second build is a cache hit, and a backend that cannot run here is refused in one line."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def _sigstream(cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stream.cli", "engines", *args],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "SIGSTREAM_CACHE": str(cache)})


def test_build_then_cached_then_listed(tmp_path: Path) -> None:
    first = _sigstream(tmp_path, "build", "--backend", "onnxruntime", "--model", "ecg_embedding")
    assert first.returncode == 0, first.stderr[-2000:]
    assert "built" in first.stdout and "max|err|" in first.stdout
    second = _sigstream(tmp_path, "build", "--backend", "onnxruntime", "--model", "ecg_embedding")
    assert second.returncode == 0 and "cached" in second.stdout
    listed = json.loads(_sigstream(tmp_path, "list", "--json").stdout)
    assert [(e["model"], e["backend"], e["precision"], e["max_batch"]) for e in listed] == [
        ("ecg_embedding", "onnxruntime", "fp32", 32)]
    assert listed[0]["versions"]["onnxruntime"] and listed[0]["size_bytes"] > 0
    assert "ecg_embedding" in _sigstream(tmp_path, "list").stdout


@pytest.mark.skipif(importlib.util.find_spec("torch_tensorrt") is not None,
                    reason="torch-tensorrt is installed: the refusal is for machines without it")
def test_tensorrt_without_a_gpu_is_refused_in_one_line(tmp_path: Path) -> None:
    run = _sigstream(tmp_path, "build", "--backend", "tensorrt", "--model", "roi_cnn")
    assert run.returncode == 2
    assert "torch-tensorrt" in run.stderr.splitlines()[-1]
    assert not list(tmp_path.glob("*"))  # nothing half-built left behind


def test_unknown_model_lists_the_choices(tmp_path: Path) -> None:
    run = _sigstream(tmp_path, "build", "--model", "nope")
    assert run.returncode == 2
    assert "codec_wideband_multiband_encoder" in run.stderr and "roi_unet" in run.stderr


def test_build_with_the_task_gate(tmp_path: Path) -> None:
    run = _sigstream(tmp_path, "build", "--backend", "onnxruntime", "--model", "roi_cnn",
                     "--task-gate")
    assert run.returncode == 0, run.stderr[-2000:]
    assert "task gate: peak F1" in run.stdout and "passed" in run.stdout
