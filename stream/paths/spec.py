"""A processing path, declared once: :class:`PathSpec`.

Everything the generic runtime, CLI, tap and engine tools need of a path is a field of its
spec, so they never name a path. A path served by the service (ingest -> per-stream stages ->
engine workers -> results) gives ``serve``; a path with its own runner (the codec link, batch
jobs) leaves it out and adds its own verbs through ``cli``. Fields a path does not use stay at
their defaults.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    from engines.engine import Engine
    from engines.gates import TaskGate
    from engines.spec import ModelSpec
    from stream.stages import ServedPath

__all__ = ["PANELS", "CliGroups", "Environment", "PathSettings", "PathSpec", "ServeOptions",
           "ViewSpec"]


@dataclass(frozen=True, kw_only=True)
class Environment:
    """What the command line read from the environment (only it reads it): ``cache_dir``, the
    compiled-engine cache; ``data_dir``, where paths keep their state (e.g. enrolled users)."""

    cache_dir: Path
    data_dir: Path


@dataclass(frozen=True)
class CliGroups:
    """The ``sigstream`` sub-command groups a path adds its verbs to (argparse sub-parser
    actions): ``run``, ``source``, ``denoise`` (batch jobs over files), ``train``, ``eval``,
    ``keys``, and ``top`` for a group of its own (``sigstream ecg ...``). A handler set with
    ``set_defaults(func=...)`` receives the parsed arguments and the :class:`Environment` and
    returns the exit status."""

    top: Any
    run: Any
    source: Any
    denoise: Any
    train: Any
    eval: Any
    keys: Any


class PathSettings(Protocol):
    """A path's own section of the service configuration: a frozen dataclass that validates
    itself in ``__post_init__`` (raising :class:`~stream.errors.ConfigError`)."""

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """The section's options on ``sigstream run <path>``."""
        ...

    @classmethod
    def from_args(cls, args: argparse.Namespace, env: Environment) -> PathSettings: ...


@dataclass(frozen=True, kw_only=True)
class ServeOptions:
    """What every served path is built from, besides its own settings: ``model`` (``None``:
    the path's default), ``weights`` (a file instead of the shipped ones), ``max_samples``
    (longest input served)."""

    model: str | None
    weights: Path | None
    max_samples: int


#: The drawings of ``sigstream view`` (:mod:`stream.view`) a path can choose for its streams.
PANELS: tuple[str, ...] = ("trace", "strip", "slices", "meters")


@dataclass(frozen=True, kw_only=True)
class ViewSpec:
    """How ``sigstream view`` (:mod:`stream.view`) draws one stream of a path.

    ``panel``, one of :data:`PANELS`: ``"trace"``, the input as a curve with the result drawn
    on it (shaded spans, markers) and a waterfall of the markers' positions over time;
    ``"strip"``, the input as a scrolling time series (header ``fs`` and ``t_ns``) with each
    result an event on it; ``"slices"``, the input and the result as images side by side,
    with window/level; ``"meters"``, for a path that is not a service (the codec link): what
    its processes' ``/metrics`` say, as level meters, counters over time and a latency.
    ``input_kind``: the wire kind of the path's input, asked of the service's mirror for the
    stream a viewer chose (``None``: draw results only); ``unit``: its values' unit.
    ``values`` and ``digest`` are ``"module:NAME"`` of two functions, imported by the view
    only (so declaring a path loads no numpy): ``values(header, array)``, an input message ->
    its values in ``unit`` (e.g. mV from ADC counts and ``gain``); ``digest(body, values)``,
    a result body and the values of the input it answers (``None`` when the mirror did not
    send it; always ``None`` for ``"strip"``) -> the small JSON the panel draws
    (:mod:`stream.view.panels` describes each panel's), or ``None`` to skip the result. A
    digest reads what came from the network: it must not trust the body's shape.
    ``metrics``: for ``"meters"``, the prefix of the metric families of the path's processes;
    their digest takes ``{family name: [(sample name, labels, value), ...]}`` of one scrape.
    """

    panel: str
    digest: str
    input_kind: str | None = None
    unit: str = ""
    values: str | None = None
    metrics: str | None = None

    def __post_init__(self) -> None:
        if self.panel not in PANELS:
            raise ValueError(f"unknown panel {self.panel!r}; choose from {', '.join(PANELS)}")


@dataclass(frozen=True, kw_only=True)
class PathSpec:
    """One processing path.

    ``name``: the ``sigstream run`` name; results are ``kind="result.<name>"``.
    ``summary``: one line for ``--help``.
    ``serve``: builds the :class:`~stream.stages.ServedPath` the stage processes run, from the
    :class:`ServeOptions` and the path's ``settings`` section (an instance of ``settings``, or
    ``None`` for a path without one); raises :class:`~stream.errors.ConfigError`.
    ``models``: the model keys ``--model`` takes (spelled out, so ``--help`` loads no torch);
    ``default_model`` the one served without ``--model``.
    ``engine_models``: ``{engine name: (ModelSpec, max_batch)}`` that ``sigstream engines
    build`` compiles, given the service's batch bound; ``task_gate`` the task-metric gate of
    one of them (:mod:`engines.gates`), ``None`` for a model without one.
    ``cli``: adds the path's own verbs (sources, train/eval, tools) to :class:`CliGroups`.
    ``format_result``: one line of ``sigstream tap`` for a result body.
    ``view``: how ``sigstream view`` draws its streams (``None``: the overview only).
    """

    name: str
    summary: str
    serve: Callable[[ServeOptions, Any], ServedPath] | None = None
    settings: type[PathSettings] | None = None
    models: tuple[str, ...] = ()
    default_model: str | None = None
    engine_models: Callable[[int], Mapping[str, tuple[ModelSpec, int]]] | None = None
    task_gate: Callable[[ModelSpec, Engine], TaskGate | None] | None = None
    cli: Callable[[CliGroups], None] | None = None
    format_result: Callable[[Mapping[str, Any]], str] | None = None
    view: ViewSpec | None = None

    RESULT_PREFIX: ClassVar[str] = "result."

    @property
    def result_kind(self) -> str:
        return f"{self.RESULT_PREFIX}{self.name}"
