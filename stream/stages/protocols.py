"""How a path plugs into the stages: its per-stream stage, its engine worker, and the frozen
description the stage processes receive.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from stream.wire import (
    Message,
)

log = logging.getLogger(__name__)


class StreamStage(Protocol):
    """Per-stream stage of a path, run on every message of one stream, in order. Stateful DSP
    keeps its state on the instance."""

    def process(self, msg: Message) -> Sequence[Message]:
        """Messages for the engine workers. Returning ``msg`` itself forwards its received
        frames unchanged. Raises :class:`~stream.errors.InputError` for an input it rejects."""
        ...

    def flush(self) -> Sequence[Message]:
        """End of stream: anything held back."""
        ...


class PathWorker(Protocol):
    """Engine half of a path, loaded once per worker process."""

    def prepare(self, msg: Message) -> tuple[np.ndarray, Any]:
        """Engine rows ``(n, *row_shape)`` float32 for ``msg``, and an opaque plan.
        Raises :class:`~stream.errors.InputError`."""
        ...

    def run(self, rows: np.ndarray) -> np.ndarray:
        """One engine call on rows of many messages."""
        ...

    def finish(self, msg: Message, outputs: np.ndarray, plan: Any) -> dict[str, Any]:
        """The result body for ``msg`` from its rows' outputs. Raises ``InputError``."""
        ...

    def close(self) -> None: ...


class ServedPath(Protocol):
    """What the stage processes run of a path: a frozen, picklable description, built by its
    :class:`~stream.paths.PathSpec` from the service's configuration.

    A stream stage may answer message for message (returning ``msg`` itself, or a message in
    its place) or keep inputs in its stream's state and make messages of its own (ECG: chunks
    in, beats out); the runtime counts the inputs it consumed and the messages it emitted
    (:mod:`stream.accounting`). A message it makes whose kind is ``result.*`` (a status report
    that needs no engine) goes straight to the publisher.
    """

    @property
    def name(self) -> str:
        """Its results are ``kind="result.<name>"``."""
        ...

    @property
    def input_kind(self) -> str:
        """The wire kind it serves."""
        ...

    @property
    def time_series(self) -> bool:
        """Its messages carry a sample rate (``fs``), checked at the door."""
        ...

    @property
    def sticky_streams(self) -> bool:
        """True: every message of a stream goes to the same worker, in order (the worker keeps
        per-stream state, such as a fused decision over the last beats); False: round robin."""
        ...

    def stream_stage(self, stream: str) -> StreamStage: ...

    def load_worker(
        self, *, backend: str, max_batch: int, cache_dir: Path | None, threads: int | None
    ) -> PathWorker: ...
