"""``sigstream engines build|list``: compile every engine ahead of time, and show the cache.

``build`` loads each selected model on the chosen backend and precision at the batch bound it
is served at (each path's :attr:`~stream.paths.PathSpec.engine_models`), through the same cache
the services use, so a service started afterwards with the same settings loads instead of
building. Each engine passes the accuracy gate against eager or is refused for that precision
(and its artifact removed); with ``--task-gate`` also its task metric (its path's
:attr:`~stream.paths.PathSpec.task_gate`, :mod:`engines.gates`). ``list``
prints the cache: model, backend, precision, shapes, max batch, library versions, device, size
and age.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from engines.cache import EngineCache
from engines.engine import load_engine
from engines.errors import AccuracyGateError, BackendUnavailableError, WeightsError
from stream.paths import PathSpec, path_specs

__all__ = ["run_engines_command"]


def run_engines_command(args: argparse.Namespace, *, cache_dir: Path,
                        service_max_batch: int) -> int:
    if args.action == "list":
        return _list(EngineCache(cache_dir), as_json=args.json)
    return _build(args, cache_dir, service_max_batch)


def _build(args: argparse.Namespace, cache_dir: Path, service_max_batch: int) -> int:
    models: dict[str, tuple[Any, int, PathSpec]] = {
        name: (spec, max_batch, path)
        for path in path_specs() if path.engine_models is not None
        for name, (spec, max_batch) in path.engine_models(service_max_batch).items()
    }
    names = list(models) if args.model == "all" else [args.model]
    unknown = [n for n in names if n not in models]
    if unknown:
        print(f"sigstream engines build: unknown model {unknown[0]!r}; choose 'all' or one of "
              f"{', '.join(models)}", file=sys.stderr)
        return 2
    failed = 0
    for name in names:
        spec, max_batch, path = models[name]
        try:
            engine = load_engine(spec, args.backend, max_batch=max_batch, cache_dir=cache_dir,
                                 precision=args.precision)
        except BackendUnavailableError as exc:
            print(f"sigstream engines build: {exc}", file=sys.stderr)
            return 2
        except AccuracyGateError as exc:
            print(f"{name}: refused at {args.precision}: {exc}", file=sys.stderr)
            failed += 1
            continue
        except WeightsError as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            failed += 1
            continue
        with engine:
            info = engine.info
            assert info is not None
            error = "-" if info.max_abs_error is None else f"{info.max_abs_error:.1e}"
            print(f"{name:<36} {info.backend:<12} {info.precision:<5} batch<={max_batch:<3} "
                  f"{'cached' if info.cache_hit else 'built ':<7} {info.build_s:6.2f} s  "
                  f"max|err| {error} (tolerance {info.tolerance})")
            gate = (path.task_gate(spec, engine)
                    if args.task_gate and path.task_gate is not None else None)
        if gate is not None:
            print(f"{'':<36} task gate: {gate}: {'passed' if gate.passed else 'FAILED'}")
            if not gate.passed:
                if info.cache_key is not None:
                    EngineCache(cache_dir).remove(info.cache_key)
                print(f"{name}: refused at {args.precision}: {gate}", file=sys.stderr)
                failed += 1
    return 1 if failed else 0


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def _list(cache: EngineCache, *, as_json: bool) -> int:
    entries = cache.list_entries()
    rows: list[dict[str, Any]] = []
    now = time.time()
    for e in entries:
        m = e.metadata
        rows.append({
            "model": m.get("model"), "backend": m.get("backend"), "precision": m.get("precision"),
            "input_shape": m.get("input_shape"), "output_shape": m.get("output_shape"),
            "max_batch": m.get("max_batch"), "versions": m.get("versions"),
            "device": m.get("device"), "size_bytes": e.size_bytes,
            "age_s": round(now - e.created), "key": e.key[:16]})
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no engines cached in {cache.root}")
        return 0
    print(f"{len(rows)} engines in {cache.root} ({sum(r['size_bytes'] for r in rows) / 1e6:.1f} "
          f"MB of at most {cache.max_bytes / 1e6:.0f} MB), most recently used first:")
    for r in rows:
        versions = ", ".join(f"{k} {v}" for k, v in (r["versions"] or {}).items())
        print(f"  {r['model']:<36} {r['backend']:<12} {r['precision']:<5} "
              f"{r['input_shape']}->{r['output_shape']} batch<={r['max_batch']}  "
              f"{r['size_bytes'] / 1e6:6.2f} MB  {_age(r['age_s'])} old\n"
              f"      {r['device']}; {versions}")
    return 0
