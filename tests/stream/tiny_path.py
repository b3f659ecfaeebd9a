"""``tiny``: a small path declared outside the project (a model, a stream stage, an engine
worker, a settings section and a result line), installed by the tests as a ``sigstream.paths``
entry point (:func:`conftest.tiny_plugin`) and served with ``sigstream run`` through real
processes and sockets, as ``docs/architecture.md`` ("How to add a path") describes.

Messages of kind ``blip`` carry 4 samples (a time series: ``fs`` required); the result is
``{"score": scale * w . x}`` from a 4 -> 1 linear model. A blip whose first sample is
:data:`STALL` keeps the engine busy for ``--stall-s`` seconds, a slow batch for the supervision
tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stream.errors import ConfigError, InputError
from stream.paths import Environment, PathSpec, ServeOptions
from stream.wire import Message

SAMPLES = 4
STALL = 1e6  # a first sample that makes the engine take --stall-s


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
    def __init__(self, scale: float, stall_s: float) -> None:
        import torch

        self.torch, self.model, self.scale, self.stall_s = torch, tiny_model(), scale, stall_s

    def prepare(self, msg: Message) -> tuple[np.ndarray, Any]:
        return np.asarray(msg.payload, np.float32)[None], None

    def run(self, rows: np.ndarray) -> np.ndarray:
        if (rows[:, 0] == STALL).any():
            time.sleep(self.stall_s)
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
    stall_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise ConfigError(f"scale must be > 0, got {self.scale}")

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--scale", type=float, default=1.0, help="tiny: score multiplier")
        parser.add_argument("--stall-s", type=float, default=0.0,
                            help="tiny: engine time of a blip that starts with 1e6")

    @classmethod
    def from_args(cls, args: argparse.Namespace, env: Environment) -> TinySettings:
        return cls(scale=args.scale, stall_s=args.stall_s)


@dataclass(frozen=True, kw_only=True)
class TinyPath:
    scale: float
    stall_s: float
    name: str = dataclasses.field(default="tiny", init=False)
    input_kind: str = dataclasses.field(default="blip", init=False)
    time_series: bool = dataclasses.field(default=True, init=False)
    sticky_streams: bool = dataclasses.field(default=False, init=False)

    def stream_stage(self, stream: str) -> TinyStage:
        return TinyStage(stream)

    def load_worker(self, *, backend: str, max_batch: int, cache_dir: Path | None,
                    threads: int | None) -> TinyWorker:
        return TinyWorker(self.scale, self.stall_s)


def _serve(options: ServeOptions, settings: TinySettings) -> TinyPath:
    return TinyPath(scale=settings.scale, stall_s=settings.stall_s)


def _result_line(body: Mapping[str, Any]) -> str:
    return f"score={body['score']:+.3f}"


SPEC = PathSpec(name="tiny", summary="tiny linear scores", serve=_serve, settings=TinySettings,
                models=("linear",), default_model="linear", format_result=_result_line)
