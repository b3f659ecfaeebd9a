"""A path plugs in without editing the project: this module declares a small path of its own
(a model, a stream stage, an engine worker, a settings section and a result line), and the test
installs it as a ``sigstream.paths`` entry point, then serves it with ``sigstream run`` through
real processes and sockets, as ``docs/architecture.md`` ("How to add a path") describes.

The path, ``tiny``: messages of kind ``blip`` carry 4 samples (a time series: ``fs`` required);
the result is ``{"score": scale * w . x}`` from a 4 -> 1 linear model.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from service_client import REPO, Client, CliService

from stream.errors import ConfigError, InputError
from stream.paths import Environment, PathSpec, ServeOptions
from stream.wire import Message

SAMPLES = 4


def tiny_model() -> Any:
    """The path's model: fixed weights, so the test can compute every expected score."""
    import torch

    model = torch.nn.Linear(SAMPLES, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0, 0.5, 0.25]]))
    return model.eval()


class TinyStage:
    """Per-stream stage: the contract is checked once, here, at the door."""

    def __init__(self, stream: str) -> None:
        self.stream = stream

    def process(self, msg: Message) -> Sequence[Message]:
        x = msg.payload
        if not isinstance(x, np.ndarray) or x.shape != (SAMPLES,) or x.dtype.kind != "f":
            raise InputError("bad_shape", f"a blip is {SAMPLES} float samples",
                             stream=msg.stream, seq=msg.seq)
        return (msg,)

    def flush(self) -> Sequence[Message]:
        return ()


class TinyWorker:
    def __init__(self, scale: float) -> None:
        import torch

        self.torch, self.model, self.scale = torch, tiny_model(), scale

    def prepare(self, msg: Message) -> tuple[np.ndarray, Any]:
        return np.asarray(msg.payload, np.float32)[None], None

    def run(self, rows: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            return self.model(self.torch.from_numpy(rows)).numpy()

    def finish(self, msg: Message, outputs: np.ndarray, plan: Any) -> dict[str, Any]:
        return {"score": self.scale * float(outputs[0, 0])}

    def close(self) -> None:
        pass


@dataclass(frozen=True, kw_only=True)
class TinySettings:
    """The path's own configuration section."""

    scale: float = 1.0

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise ConfigError(f"scale must be > 0, got {self.scale}")

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--scale", type=float, default=1.0, help="tiny: score multiplier")

    @classmethod
    def from_args(cls, args: argparse.Namespace, env: Environment) -> TinySettings:
        return cls(scale=args.scale)


@dataclass(frozen=True, kw_only=True)
class TinyPath:
    scale: float
    name: str = dataclasses.field(default="tiny", init=False)
    input_kind: str = dataclasses.field(default="blip", init=False)
    time_series: bool = dataclasses.field(default=True, init=False)
    sticky_streams: bool = dataclasses.field(default=False, init=False)

    def stream_stage(self, stream: str) -> TinyStage:
        return TinyStage(stream)

    def load_worker(self, *, backend: str, max_batch: int, cache_dir: Path | None,
                    threads: int | None) -> TinyWorker:
        return TinyWorker(self.scale)


def _serve(options: ServeOptions, settings: TinySettings) -> TinyPath:
    return TinyPath(scale=settings.scale)


def _result_line(body: Mapping[str, Any]) -> str:
    return f"score={body['score']:+.3f}"


SPEC = PathSpec(name="tiny", summary="tiny linear scores", serve=_serve, settings=TinySettings,
                models=("linear",), default_model="linear", format_result=_result_line)


@pytest.fixture
def plugin(tmp_path: Path) -> dict[str, str]:
    """The environment of a process in which ``tiny`` is installed: an entry point of the
    ``sigstream.paths`` group pointing at :data:`SPEC` of this module."""
    dist = tmp_path / "tiny_path-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-path\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        f"[sigstream.paths]\ntiny = {Path(__file__).stem}:SPEC\n")
    return {"PYTHONPATH": f"{tmp_path}:{Path(__file__).parent}:{REPO}"}


def test_a_path_declared_outside_the_project_is_served_end_to_end(
        plugin: dict[str, str]) -> None:
    # The CLI lists it, with its own option, beside the built-in paths.
    usage = subprocess.run([sys.executable, "-m", "stream.cli", "run", "tiny", "--help"],
                           cwd=REPO, env={**plugin, "PATH": ""}, capture_output=True,
                           text=True, timeout=120)
    assert usage.returncode == 0 and "--scale" in usage.stdout, usage.stderr

    run = CliService(None, "--scale", "2", "--workers", "2", path="tiny", env=plugin)
    try:
        ingest, publish = run.ready()
        client = Client(ingest, publish)
        try:
            rng = np.random.default_rng(0)
            blips = rng.normal(size=(40, SAMPLES)).astype(np.float32)
            for seq, x in enumerate(blips):
                client.send("dev-1", seq, x, kind="blip", t_ns=0, fs=10.0)
            client.send("dev-1", 40, np.zeros(3, np.float32), kind="blip", t_ns=0, fs=10.0)
            client.send("dev-1", 41, blips[0], kind="blip", t_ns=0)  # no fs
            client.send("dev-1", 42, blips[0], kind="spectrum", t_ns=0)
            answers = client.wait_for(lambda got: len(got) >= 43)
        finally:
            client.close()
    finally:
        run.close()

    by_seq = {m.seq: m for m in answers if m.stream == "dev-1"}
    assert sorted(by_seq) == list(range(43)), "every message answered once"
    weights = np.array([1.0, -2.0, 0.5, 0.25], np.float32)
    for seq, x in enumerate(blips):
        assert by_seq[seq].kind == "result.tiny"
        assert by_seq[seq].payload["score"] == pytest.approx(2 * float(x @ weights), rel=1e-5)
    codes = {seq: by_seq[seq].payload.get("code") for seq in (40, 41, 42)}
    assert codes == {40: "bad_shape", 41: "missing_field", 42: "wrong_kind"}


def test_the_registry_lists_a_plug_in_after_the_built_in_paths(plugin: dict[str, str]) -> None:
    code = ("from stream.paths import path_specs\n"
            "from stream.tap import format_message\n"
            "from stream.wire import result_message\n"
            "print(' '.join(spec.name for spec in path_specs()))\n"
            "msg = result_message('tiny', {'stream': 'dev-1', 'seq': 7, 't_ns': 0}, "
            "{'score': 1.5})\n"
            "print(format_message(msg, 0))\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=plugin,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    names, line = run.stdout.splitlines()
    assert names == "spectral ecg codec ct pet tiny"
    assert line.startswith("dev-1  seq=7  ") and line.endswith("  score=+1.500")
