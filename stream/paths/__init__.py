"""The processing paths: one immutable tuple of declared :class:`PathSpec`, built once.

Built in: ``spectral`` (spectral peaks), ``ecg`` (user recognition), ``codec`` (audio codec),
``ct`` (low-dose CT), ``pet`` (short-acquisition PET).
Each lives in one package here (``stream/paths/<name>/``: what the service runs, its sources,
its command line) beside its models under ``engines/`` and its devices under ``devices/``.

A path from another package plugs in as an entry point of the group ``sigstream.paths`` naming
its :class:`PathSpec`, e.g. in that package's ``pyproject.toml``::

    [project.entry-points."sigstream.paths"]
    tiny = "my_package.tiny:SPEC"

The runtime, the CLI, the tap and the engine tools find paths here only (``docs/architecture.md``
walks through adding one).
"""

from __future__ import annotations

import functools

from stream.paths.spec import (
    CliGroups,
    Environment,
    PathSettings,
    PathSpec,
    ServeOptions,
    ViewSpec,
)

__all__ = [
    "CliGroups",
    "Environment",
    "PLUGIN_GROUP",
    "PathSettings",
    "PathSpec",
    "ServeOptions",
    "ViewSpec",
    "path_spec",
    "path_specs",
    "served_paths",
]

PLUGIN_GROUP = "sigstream.paths"


@functools.cache
def path_specs() -> tuple[PathSpec, ...]:
    """Every path: the built-in ones, then the plug-ins in entry-point order."""
    from importlib.metadata import entry_points

    from stream.errors import ConfigError
    from stream.paths.codec import SPEC as codec
    from stream.paths.ct import SPEC as ct
    from stream.paths.ecg import SPEC as ecg
    from stream.paths.pet import SPEC as pet
    from stream.paths.spectral import SPEC as spectral

    specs: list[PathSpec] = [spectral, ecg, codec, ct, pet]
    for point in entry_points(group=PLUGIN_GROUP):
        spec = point.load()
        if not isinstance(spec, PathSpec):
            raise ConfigError(f"plug-in {point.value!r} ({PLUGIN_GROUP}) is not a PathSpec")
        specs.append(spec)
    names = [spec.name for spec in specs]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"two paths are named {name!r} (plug-ins of {PLUGIN_GROUP})")
    return tuple(specs)


def path_spec(name: str) -> PathSpec:
    """The path called ``name``; :class:`~stream.errors.ConfigError` naming the known ones
    otherwise."""
    from stream.errors import ConfigError

    for spec in path_specs():
        if spec.name == name:
            return spec
    known = ", ".join(spec.name for spec in path_specs())
    raise ConfigError(f"unknown path {name!r}; choose from {known}")


def served_paths() -> tuple[PathSpec, ...]:
    """The paths the service runs (``sigstream run <name>``)."""
    return tuple(spec for spec in path_specs() if spec.serve is not None)
