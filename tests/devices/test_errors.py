"""The one error hierarchy: every exception class the project defines derives from
``SigstreamError`` (signals excepted), and the tree drawn in ``devices.errors`` is the real one."""

from __future__ import annotations

import builtins
import importlib
import pkgutil
import re

import devices
import devices.errors
import engines
import stream
from devices.errors import ConfigError, DeviceError, SigstreamError, SourceFileError
from devices.frames import EndOfStream
from stream.queues import EndOfQueue, QueueEmpty, QueueFull

# Control flow, not errors: an `except SigstreamError` must never swallow the end of a stream.
SIGNALS = frozenset({EndOfStream, EndOfQueue, QueueEmpty, QueueFull})


def _project_exceptions() -> set[type[BaseException]]:
    """Every exception class defined in a module of stream, engines or devices."""
    found: set[type[BaseException]] = set()
    for package in (devices, engines, stream):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            module = importlib.import_module(info.name)
            found.update(
                obj for obj in vars(module).values()
                if isinstance(obj, type) and issubclass(obj, BaseException)
                and obj.__module__ == module.__name__
            )
    return found


def _drawn_tree() -> dict[str, tuple[str | None, frozenset[str]]]:
    """``{class name: (drawn parent, drawn builtin mixins)}`` from the root module's docstring."""
    doc = devices.errors.__doc__ or ""
    drawing = doc.split("::", 1)[1].split("\n\n", 2)[1]
    tree: dict[str, tuple[str | None, frozenset[str]]] = {}
    parents: list[str] = []  # parents[d]: the last class drawn at depth d
    for line in drawing.splitlines():
        if (root := re.fullmatch(r"    (\w+)\s.*", line)) and not tree:
            tree[root.group(1)] = (None, frozenset())
            parents = [root.group(1)]
            continue
        node = re.match(r"(.*?)[├└]── (\w+)(?: \(([\w, ]+)\))?", line)
        if node is None:
            continue  # a description carried over to the next line
        depth = (len(node.group(1)) - 4) // 4 + 1
        mixins = frozenset(m.strip() for m in (node.group(3) or "").split(",") if m.strip())
        tree[node.group(2)] = (parents[depth - 1], mixins)
        del parents[depth:]
        parents.append(node.group(2))
    return tree


def test_every_project_error_derives_from_the_one_root() -> None:
    found = _project_exceptions()
    assert SIGNALS <= found
    strays = sorted(f"{c.__module__}.{c.__qualname__}" for c in found - SIGNALS
                    if not issubclass(c, SigstreamError))
    assert not strays, f"errors outside SigstreamError: {strays}"
    assert not [s for s in SIGNALS if issubclass(s, SigstreamError)]


def test_the_drawn_tree_is_the_real_one() -> None:
    """Each class is drawn once, under its project base, with the builtins it mixes in."""
    errors = {c.__name__: c for c in _project_exceptions() - SIGNALS}
    assert len(errors) == len(_project_exceptions() - SIGNALS), "two errors share a name"
    tree = _drawn_tree()
    assert set(tree) == set(errors), "drawn tree and defined errors differ"
    for name, (parent, mixins) in tree.items():
        bases = errors[name].__bases__
        project = [b.__name__ for b in bases if b.__module__ != "builtins"]
        native = {b.__name__ for b in bases if b.__module__ == "builtins"}
        if parent is None:
            assert bases == (Exception,)
            continue
        assert project == [parent], (name, project, parent)
        assert native == mixins, (name, native, mixins)
        assert all(isinstance(getattr(builtins, m), type) for m in mixins)


def test_callers_keep_their_builtins_and_import_paths() -> None:
    from devices.frames import DeviceError as FramesDeviceError
    from engines import WeightsError, WeightsMismatchError, WeightsNotFoundError
    from engines.errors import SigstreamError as EnginesRoot
    from stream import SigstreamError as StreamRoot
    from stream.errors import ConfigError as StreamConfigError

    assert StreamRoot is EnginesRoot is SigstreamError
    assert FramesDeviceError is DeviceError and StreamConfigError is ConfigError
    assert issubclass(SourceFileError, ValueError) and issubclass(DeviceError, RuntimeError)
    assert issubclass(ConfigError, ValueError)
    assert issubclass(WeightsNotFoundError, FileNotFoundError)
    assert issubclass(WeightsMismatchError, ValueError)
    assert not issubclass(WeightsMismatchError, OSError)
    assert not issubclass(WeightsError, OSError)  # the base is neither: it holds both
