"""On-disk cache of compiled engines (ONNX graphs, TensorRT programs).

An entry is keyed by the sha256 of everything that makes a compiled artifact valid: the weights
hash, input/output shapes, max batch, precision, backend, the versions of the libraries that
built it and the device it was built for (see :func:`cache_key`). Any change gives a new key, so
an artifact built for other weights, another library version or another GPU is never loaded.

Layout of the cache directory, flat, one entry per key::

    <key>.<suffix>   the artifact (".onnx", ".ep", ...)
    <key>.json       metadata: key, components, artifact sha256 and size, model, shapes,
                     precision, versions, device, created (Unix seconds), and once the
                     artifact passed the accuracy gate, its result (``accuracy_gate``)
    <key>.lock       advisory fcntl lock held while one process builds the entry

Writes are atomic: the artifact and then its metadata are written to temporary files in the same
directory and moved into place with ``os.replace``; the metadata goes last, so an entry is visible
only once complete. A reader verifies the metadata (key, components, artifact size and sha256)
and treats anything that does not match as stale: the entry is removed and rebuilt, never
loaded. Concurrent builders of the same key serialise on the lock file (the second one finds the
first one's entry); if locking is unavailable the atomic renames still leave one valid entry.

The total size is bounded by ``max_bytes``: after each write the least recently used entries
(by the metadata file's mtime, refreshed on every hit) are evicted.

The library never reads environment variables: the CLI passes the directory
(``$SIGSTREAM_CACHE`` or ``~/.cache/sigstream/engines``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

__all__ = [
    "CACHE_FORMAT",
    "CacheEntry",
    "EngineCache",
    "cache_key",
    "cpu_name",
    "library_versions",
]

logger = logging.getLogger(__name__)

#: Bumped when the layout or the meaning of a key component changes; part of every key.
CACHE_FORMAT = 1

_META_SUFFIX = ".json"
_LOCK_SUFFIX = ".lock"
_HASH_CHUNK_BYTES = 1 << 20


def cache_key(components: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of ``components`` plus :data:`CACHE_FORMAT`.

    ``components`` must be JSON-serialisable (tuples become lists); key order does not matter.
    """
    payload = {"cache_format": CACHE_FORMAT, **components}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=_json_default)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def library_versions(*distributions: str) -> dict[str, str]:
    """Installed version of each distribution name, ``"absent"`` where it is not installed."""
    versions = {}
    for name in distributions:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def cpu_name() -> str:
    """CPU model and architecture, e.g. ``"AMD EPYC 7B13 (x86_64)"``.

    Compiled CPU graphs may use ISA-specific kernels, so the CPU model is part of a key.
    """
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model or platform.processor() or 'unknown cpu'} ({platform.machine()})"


@dataclass(frozen=True, kw_only=True)
class CacheEntry:
    """One valid cache entry as listed by :meth:`EngineCache.list_entries`."""

    key: str
    artifact: Path
    size_bytes: int
    created: float
    last_used: float
    metadata: dict[str, Any]


class EngineCache:
    """A bounded, process-safe directory of compiled engine artifacts.

    ``root`` is created on first write. ``max_bytes`` bounds the sum of artifact and metadata
    sizes; the least recently used entries are evicted past it (the entry just written is kept
    even if it alone is larger). Instances hold no open resources and may be shared by threads
    that use different keys.
    """

    def __init__(self, root: str | os.PathLike[str], *, max_bytes: int = 2 << 30) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self._root = Path(root).expanduser()
        self._max_bytes = int(max_bytes)

    @property
    def root(self) -> Path:
        return self._root

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    def artifact_path(self, key: str, suffix: str) -> Path:
        return self._root / f"{key}{suffix}"

    # -- reading -------------------------------------------------------------------------------

    def get(self, key: str, *, components: Mapping[str, Any] | None = None) -> Path | None:
        """The artifact for ``key`` if a valid entry exists, else ``None``.

        A stale or foreign entry (metadata for another key or other components, artifact
        missing, truncated or altered) is removed and ``None`` is returned so that the caller
        rebuilds it. A hit refreshes the entry's LRU time.
        """
        meta_path = self._root / f"{key}{_META_SUFFIX}"
        if not meta_path.exists():
            return None
        reason = None
        meta = self._read_meta(meta_path)
        if meta is None:
            reason = "unreadable metadata"
        else:
            reason = self._invalid_reason(key, meta, components)
        if reason is not None:
            logger.warning(
                "engine cache: discarding entry %s (%s); it will be rebuilt", key[:12], reason
            )
            self.remove(key)
            return None
        assert meta is not None
        artifact = self._root / meta["artifact"]
        with contextlib.suppress(OSError):
            os.utime(meta_path)
        return artifact

    def _invalid_reason(
        self, key: str, meta: Mapping[str, Any], components: Mapping[str, Any] | None
    ) -> str | None:
        if meta.get("key") != key:
            return "metadata belongs to another key"
        stored = meta.get("components")
        if not isinstance(stored, dict) or cache_key(stored) != key:
            return "components do not hash to the key"
        if components is not None and cache_key(components) != key:
            return "components differ from the requested ones"
        name = meta.get("artifact")
        if not isinstance(name, str) or "/" in name or not name.startswith(key):
            return "bad artifact name"
        artifact = self._root / name
        try:
            size = artifact.stat().st_size
        except OSError:
            return "artifact missing"
        if size != meta.get("size_bytes"):
            return f"artifact is {size} bytes, metadata says {meta.get('size_bytes')}"
        if _sha256_file(artifact) != meta.get("sha256"):
            return "artifact checksum mismatch"
        return None

    @staticmethod
    def _read_meta(path: Path) -> dict[str, Any] | None:
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return meta if isinstance(meta, dict) else None

    def list_entries(self) -> list[CacheEntry]:
        """Entries whose metadata parses and whose artifact exists, most recently used first.

        Listing does not verify checksums (that happens on :meth:`get`).
        """
        entries: list[CacheEntry] = []
        if not self._root.is_dir():
            return entries
        for meta_path in self._root.glob(f"*{_META_SUFFIX}"):
            meta = self._read_meta(meta_path)
            if meta is None or not isinstance(meta.get("artifact"), str):
                continue
            artifact = self._root / meta["artifact"]
            try:
                size = artifact.stat().st_size + meta_path.stat().st_size
                last_used = meta_path.stat().st_mtime
            except OSError:
                continue
            entries.append(
                CacheEntry(
                    key=str(meta.get("key", meta_path.stem)),
                    artifact=artifact,
                    size_bytes=size,
                    created=float(meta.get("created", last_used)),
                    last_used=last_used,
                    metadata=meta,
                )
            )
        entries.sort(key=lambda e: e.last_used, reverse=True)
        return entries

    def total_bytes(self) -> int:
        return sum(e.size_bytes for e in self.list_entries())

    # -- writing -------------------------------------------------------------------------------

    def put(
        self,
        key: str,
        *,
        suffix: str,
        components: Mapping[str, Any],
        build: Callable[[Path], None],
        metadata: Mapping[str, Any] | None = None,
    ) -> Path:
        """Build an artifact with ``build(tmp_path)`` and publish it atomically under ``key``.

        ``build`` must write the complete artifact to the path it is given (a temporary file in
        the cache directory). Extra ``metadata`` (model, shapes, versions, device, ...) is stored
        beside it. Returns the published artifact path. Evicts LRU entries past ``max_bytes``.
        """
        if cache_key(components) != key:
            raise ValueError("key does not match its components")
        self._root.mkdir(parents=True, exist_ok=True)
        artifact = self.artifact_path(key, suffix)
        tmp_artifact = self._tmp_path(artifact)
        try:
            build(tmp_artifact)
            size = tmp_artifact.stat().st_size
            digest = _sha256_file(tmp_artifact)
            os.replace(tmp_artifact, artifact)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp_artifact.unlink()
        meta = {
            **dict(metadata or {}),
            "key": key,
            "components": dict(components),
            "artifact": artifact.name,
            "size_bytes": size,
            "sha256": digest,
            "created": time.time(),
        }
        self._write_meta(self._root / f"{key}{_META_SUFFIX}", meta)
        self.evict(keep=key)
        return artifact

    def get_or_build(
        self,
        key: str,
        *,
        suffix: str,
        components: Mapping[str, Any],
        build: Callable[[Path], None],
        metadata: Mapping[str, Any] | None = None,
    ) -> tuple[Path, bool]:
        """``(artifact, hit)``: the valid cached artifact, or a freshly built and published one.

        Builders of the same key in other processes wait on the key's lock instead of building
        twice.
        """
        hit = self.get(key, components=components)
        if hit is not None:
            return hit, True
        self._root.mkdir(parents=True, exist_ok=True)
        with self._lock(key):
            # Another process may have published the entry while this one waited for the lock.
            hit = self.get(key, components=components)
            if hit is not None:
                return hit, True
            path = self.put(
                key, suffix=suffix, components=components, build=build, metadata=metadata
            )
            return path, False

    def record_gate(self, key: str, result: Mapping[str, Any]) -> None:
        """Note in ``key``'s metadata that its artifact passed the accuracy gate (``result``:
        the measured error and the tolerance), atomically; a missing entry is left alone."""
        meta_path = self._root / f"{key}{_META_SUFFIX}"
        meta = self._read_meta(meta_path)
        if meta is None:
            return
        meta["accuracy_gate"] = dict(result)
        try:
            self._write_meta(meta_path, meta)
        except OSError as exc:  # a read-only cache still serves; the gate runs again next time
            logger.warning("engine cache: cannot record the gate of %s: %s", key[:12], exc)

    def recorded_gate(self, key: str) -> dict[str, Any] | None:
        """The accuracy gate result recorded for ``key`` (:meth:`record_gate`), if any."""
        meta = self._read_meta(self._root / f"{key}{_META_SUFFIX}")
        gate = None if meta is None else meta.get("accuracy_gate")
        return gate if isinstance(gate, dict) else None

    def remove(self, key: str) -> None:
        """Remove an entry (metadata first, so a half-removed entry is never seen as valid)."""
        meta_path = self._root / f"{key}{_META_SUFFIX}"
        meta = self._read_meta(meta_path)
        with contextlib.suppress(FileNotFoundError):
            meta_path.unlink()
        names = {meta["artifact"]} if meta and isinstance(meta.get("artifact"), str) else set()
        names |= {
            p.name
            for p in self._root.glob(f"{key}.*")
            if p.suffix not in (_META_SUFFIX, _LOCK_SUFFIX) and ".tmp" not in p.name
        }
        for name in names:
            if "/" not in name and name.startswith(key):
                with contextlib.suppress(FileNotFoundError):
                    (self._root / name).unlink()

    def evict(self, *, keep: str | None = None) -> list[str]:
        """Remove least recently used entries until the total size fits ``max_bytes``.

        Returns the evicted keys. ``keep`` is never evicted.
        """
        entries = self.list_entries()
        total = sum(e.size_bytes for e in entries)
        evicted = []
        for entry in reversed(entries):  # oldest first
            if total <= self._max_bytes:
                break
            if entry.key == keep:
                continue
            self.remove(entry.key)
            with contextlib.suppress(FileNotFoundError):
                (self._root / f"{entry.key}{_LOCK_SUFFIX}").unlink()
            total -= entry.size_bytes
            evicted.append(entry.key)
            logger.info(
                "engine cache: evicted %s (%d bytes, LRU)", entry.key[:12], entry.size_bytes
            )
        return evicted

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _tmp_path(final: Path) -> Path:
        fd, name = tempfile.mkstemp(prefix=f"{final.name}.", suffix=".tmp", dir=final.parent)
        # mkstemp creates 0600; entries are ordinary readable files like any other cache.
        os.fchmod(fd, 0o644)
        os.close(fd)
        return Path(name)

    def _write_meta(self, meta_path: Path, meta: Mapping[str, Any]) -> None:
        """Write ``meta`` as ``meta_path`` (JSON) atomically: a temporary file, then a rename."""
        tmp_meta = self._tmp_path(meta_path)
        try:
            tmp_meta.write_text(json.dumps(meta, indent=1, sort_keys=True, default=_json_default))
            os.replace(tmp_meta, meta_path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp_meta.unlink()

    @contextlib.contextmanager
    def _lock(self, key: str) -> Iterator[None]:
        try:
            import fcntl
        except ImportError:  # not POSIX: atomic renames alone keep the entry valid
            yield
            return
        lock_path = self._root / f"{key}{_LOCK_SUFFIX}"
        with open(lock_path, "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _json_default(value: Any) -> Any:
    if isinstance(value, set | frozenset):
        return sorted(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot put {type(value).__name__} in a cache key")
