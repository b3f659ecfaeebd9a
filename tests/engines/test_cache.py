"""Tests of the on-disk engine cache: keys, atomic entries, stale/corrupt rebuilds, LRU bound,
concurrent builders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from engines.cache import EngineCache, cache_key, cpu_name, library_versions

REPO = Path(__file__).resolve().parents[2]

# Each cache-key component: its value in BASE and a changed value that must change the key.
COMPONENTS: tuple[tuple[str, Any, Any], ...] = (
    ("model", "tiny", "other"),
    ("weights_sha256", "ab" * 32, "cd" * 32),
    ("input_shape", [1, 64], [1, 128]),
    ("output_shape", [1, 64], [2, 64]),
    ("max_batch", 64, 32),
    ("precision", "fp32", "fp16"),
    ("backend", "onnxruntime", "tensorrt"),
    (
        "versions",
        {"torch": "2.13.0", "onnx": "1.23.2", "onnxruntime": "1.31.1"},
        {"torch": "2.13.0", "onnx": "1.23.2", "onnxruntime": "1.32.0"},
    ),
    ("device", "AMD EPYC (x86_64)", "NVIDIA H100 (sm_90)"),
    ("options", {"exporter": "dynamo"}, {"exporter": "legacy"}),
)
BASE: dict[str, Any] = {name: base for name, base, _ in COMPONENTS}
CHANGES: dict[str, Any] = {name: changed for name, _, changed in COMPONENTS}


def writer(payload: bytes):
    def build(path: Path) -> None:
        path.write_bytes(payload)

    return build


def put(cache: EngineCache, components: dict[str, Any], payload: bytes) -> tuple[str, Path]:
    key = cache_key(components)
    path = cache.put(
        key,
        suffix=".bin",
        components=components,
        build=writer(payload),
        metadata={"model": components["model"]},
    )
    return key, path


@pytest.mark.parametrize("component", sorted(CHANGES))
def test_key_changes_with_each_component(component: str) -> None:
    assert cache_key({**BASE, component: CHANGES[component]}) != cache_key(BASE)


def test_key_is_stable_and_order_insensitive() -> None:
    assert cache_key(BASE) == cache_key(dict(reversed(list(BASE.items()))))
    assert cache_key({**BASE, "input_shape": (1, 64)}) == cache_key(BASE)
    assert len(cache_key(BASE)) == 64


def test_device_and_versions_are_described() -> None:
    assert cpu_name().strip()
    versions = library_versions("torch", "surely-not-installed-dist")
    assert versions["torch"] != "absent"
    assert versions["surely-not-installed-dist"] == "absent"


def test_round_trip_metadata_and_listing(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path / "c")
    key, path = put(cache, BASE, b"x" * 100)
    assert cache.get(key) == path and path.read_bytes() == b"x" * 100
    meta = json.loads((tmp_path / "c" / f"{key}.json").read_text())
    assert meta["key"] == key and meta["model"] == "tiny" and meta["size_bytes"] == 100
    assert meta["components"]["device"] == BASE["device"] and meta["created"] > 0
    (entry,) = cache.list_entries()
    assert entry.key == key and entry.artifact == path and entry.size_bytes > 100
    assert not list((tmp_path / "c").glob("*.tmp")), "temporary files must not remain"


def test_get_or_build_builds_once_then_hits(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    builds = []

    def build(path: Path) -> None:
        builds.append(path)
        path.write_bytes(b"artifact")

    key = cache_key(BASE)
    first, hit1 = cache.get_or_build(key, suffix=".bin", components=BASE, build=build)
    second, hit2 = cache.get_or_build(key, suffix=".bin", components=BASE, build=build)
    assert (hit1, hit2) == (False, True) and first == second and len(builds) == 1


def corrupt_artifact(root: Path, key: str) -> None:
    (root / f"{key}.bin").write_bytes(b"garbage!")  # same size as b"artifact", other bytes


def truncate_artifact(root: Path, key: str) -> None:
    (root / f"{key}.bin").write_bytes(b"art")


def delete_artifact(root: Path, key: str) -> None:
    (root / f"{key}.bin").unlink()


def corrupt_metadata(root: Path, key: str) -> None:
    (root / f"{key}.json").write_text("{not json")


def foreign_metadata(root: Path, key: str) -> None:
    # An entry copied from another configuration under this key's name.
    meta = json.loads((root / f"{key}.json").read_text())
    meta["components"] = {**meta["components"], "device": "some other machine"}
    (root / f"{key}.json").write_text(json.dumps(meta))


def other_key_metadata(root: Path, key: str) -> None:
    meta = json.loads((root / f"{key}.json").read_text())
    meta["key"] = "0" * 64
    (root / f"{key}.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "damage",
    [
        corrupt_artifact,
        truncate_artifact,
        delete_artifact,
        corrupt_metadata,
        foreign_metadata,
        other_key_metadata,
    ],
)
def test_stale_or_corrupt_entry_is_rebuilt_not_loaded(tmp_path: Path, damage) -> None:
    cache = EngineCache(tmp_path)
    key = cache_key(BASE)
    cache.get_or_build(key, suffix=".bin", components=BASE, build=writer(b"artifact"))
    damage(tmp_path, key)
    assert cache.get(key) is None
    rebuilt = []

    def build(path: Path) -> None:
        rebuilt.append(path)
        path.write_bytes(b"artifact")

    path, hit = cache.get_or_build(key, suffix=".bin", components=BASE, build=build)
    assert not hit and rebuilt and path.read_bytes() == b"artifact"
    assert cache.get(key) == path


def test_components_that_do_not_match_the_key_are_refused(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    with pytest.raises(ValueError):
        cache.put("f" * 64, suffix=".bin", components=BASE, build=writer(b"x"))
    key, _ = put(cache, BASE, b"x")
    assert cache.get(key, components={**BASE, "precision": "fp16"}) is None


def test_failed_build_leaves_no_entry(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)

    def broken(path: Path) -> None:
        path.write_bytes(b"half")
        raise RuntimeError("compiler crashed")

    with pytest.raises(RuntimeError):
        cache.get_or_build(cache_key(BASE), suffix=".bin", components=BASE, build=broken)
    assert cache.list_entries() == []
    assert not [p for p in tmp_path.iterdir() if p.suffix != ".lock"]


def test_size_bound_evicts_least_recently_used(tmp_path: Path) -> None:
    probe = EngineCache(tmp_path / "probe")
    put(probe, BASE, bytes(1_000))
    entry_bytes = probe.total_bytes()  # artifact + metadata
    bound = int(3.5 * entry_bytes)
    cache = EngineCache(tmp_path, max_bytes=bound)
    keys = []
    for i in range(3):
        key, _ = put(cache, {**BASE, "model": f"m{i}"}, bytes(1_000))
        # Deterministic LRU clock instead of sleeping for mtime resolution.
        os.utime(tmp_path / f"{key}.json", (1_000 + i, 1_000 + i))
        keys.append(key)
    assert len(cache.list_entries()) == 3
    cache.get(keys[0])  # m0 becomes the most recently used
    new_key, _ = put(cache, {**BASE, "model": "m3"}, bytes(1_000))
    left = {e.key for e in cache.list_entries()}
    assert keys[1] not in left, "the least recently used entry is evicted"
    assert {keys[0], keys[2], new_key} <= left
    assert cache.total_bytes() <= bound


def test_entry_larger_than_the_bound_is_kept_alone(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path, max_bytes=500)
    put(cache, {**BASE, "model": "a"}, bytes(100))
    key, path = put(cache, {**BASE, "model": "b"}, bytes(2_000))
    assert [e.key for e in cache.list_entries()] == [key] and path.exists()


BUILDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from engines.cache import EngineCache, cache_key
    root, log, go = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    components = {"model": "shared", "max_batch": 64}
    def build(path):
        with open(log, "a") as f:
            f.write("build\\n")
        with open(path, "wb") as f:
            for _ in range(20):  # a slow, chunked write that a reader could catch half-done
                f.write(b"z" * 5000)
                f.flush()
                time.sleep(0.01)
    while not go.exists():
        time.sleep(0.005)
    cache = EngineCache(root)
    path, hit = cache.get_or_build(cache_key(components), suffix=".bin",
                                   components=components, build=build)
    print(hit, path.stat().st_size)
    """
)


def test_two_processes_building_at_once_leave_one_valid_entry(tmp_path: Path) -> None:
    root, log, go = tmp_path / "cache", tmp_path / "builds.log", tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", BUILDER, str(root), str(log), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO,
        )
        for _ in range(2)
    ]
    go.touch()
    results = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
        assert out.split()[1] == "100000"
    assert sorted(out.split()[0] for out, _ in results) == ["False", "True"]
    assert log.read_text().count("build") == 1, "the lock makes the second builder wait"
    cache = EngineCache(root)
    key = cache_key({"model": "shared", "max_batch": 64})
    path = cache.get(key)
    assert path is not None and path.read_bytes() == b"z" * 100_000
    assert not list(root.glob("*.tmp"))
