"""Enrolled users' embedding templates in one SQLite file (stdlib ``sqlite3``).

What is stored: per ``(user, model_id)`` the unit-norm mean template (``dim`` float32), the sum of
the unit embeddings it came from (float64, so enrolment can be extended exactly) and the number
of beats; created/updated times. Never raw ECG, never single-beat embeddings.

``model_id`` names the embedding model the template belongs to — use the weights' sha256
(:meth:`engines.spec.ModelSpec.weights_sha256`): a template is only comparable with embeddings of
the very same weights, so :meth:`TemplateStore.templates` returns one model's templates only and
retraining the model means re-enrolling.

Re-enrolment: ``enroll(..., extend=False)`` (the default) **replaces** the user's template for
that model; ``extend=True`` **adds** the new beats to it (the template becomes the normalised
mean of all beats enrolled so far), for enrolment in several sittings.

Concurrency: any number of processes may open the same file. The database runs in WAL mode
(readers never block the writer), every connection waits up to ``busy_timeout_s`` for a lock,
and every write is one ``BEGIN IMMEDIATE`` transaction that also bumps a version counter. A
worker polls :meth:`TemplateStore.changed` (one indexed read of that counter, ~µs) and calls
:meth:`TemplateStore.templates` when it says so. One :class:`TemplateStore` may be shared by
threads (calls are serialised by a lock). The file is created with mode 0600: templates are
biometric data.

Errors: :class:`TemplateStoreError` (an :class:`~engines.errors.EngineError`) for anything the
database does wrong (unreadable file, locked for longer than the timeout, foreign schema);
``ValueError`` for bad arguments (empty user name, embeddings of the wrong shape or not finite).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np

from engines.errors import EngineError

__all__ = ["SCHEMA_VERSION", "TemplateStore", "TemplateStoreError", "UserRecord"]

SCHEMA_VERSION = 1
_MAX_USER_LEN = 256

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS templates (
    user TEXT NOT NULL,
    model_id TEXT NOT NULL,
    dim INTEGER NOT NULL,
    n_beats INTEGER NOT NULL,
    template BLOB NOT NULL,      -- float32 little-endian (dim,), unit norm
    sum BLOB NOT NULL,           -- float64 little-endian (dim,), sum of unit embeddings
    created_s REAL NOT NULL,     -- Unix time, seconds
    updated_s REAL NOT NULL,
    PRIMARY KEY (user, model_id)
);
CREATE INDEX IF NOT EXISTS templates_by_model ON templates (model_id, user);
"""


class TemplateStoreError(EngineError):
    """The template database cannot be opened, read or written."""


@dataclass(frozen=True, kw_only=True, slots=True)
class UserRecord:
    """One enrolled template: who, for which model, from how many beats, when (Unix s)."""

    user: str
    model_id: str
    n_beats: int
    created_s: float
    updated_s: float


def _check_user(user: str) -> str:
    if not isinstance(user, str) or not user.strip():
        raise ValueError("user must be a non-empty string")
    if len(user) > _MAX_USER_LEN or any(ord(c) < 32 for c in user):
        raise ValueError(f"user must be at most {_MAX_USER_LEN} printable characters")
    return user


def _check_model_id(model_id: str) -> str:
    if not isinstance(model_id, str) or not model_id:
        raise ValueError("model_id must be a non-empty string (the weights' sha256)")
    return model_id


class TemplateStore:
    """SQLite-backed template store (see the module docstring).

    ``path``: the database file (created on :meth:`open`, parent folders too). ``dim``: the
    embedding size every template must have. ``busy_timeout_s``: how long a call waits for
    another process's write lock before raising :class:`TemplateStoreError`.
    The constructor does no I/O; :meth:`open` connects, :meth:`close` releases (safe twice);
    ``with TemplateStore(p) as store:`` does both.
    """

    def __init__(self, path: str | os.PathLike[str], *, dim: int = 64,
                 busy_timeout_s: float = 10.0) -> None:
        if int(dim) < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if busy_timeout_s < 0:
            raise ValueError(f"busy_timeout_s must be >= 0, got {busy_timeout_s}")
        self._path = Path(path)
        self._dim = int(dim)
        self._timeout_s = float(busy_timeout_s)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._seen_version: int | None = None

    @property
    def path(self) -> Path:
        return self._path

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    # -- lifecycle -----------------------------------------------------------------------------

    def open(self) -> TemplateStore:
        """Connect, creating the file and schema if needed. Idempotent; returns ``self``."""
        with self._lock:
            if self._conn is not None:
                return self
            try:
                self._path.parent.mkdir(parents=True, exist_ok=True)
                if not self._path.exists():
                    # create it private before SQLite does (SQLite would use the umask)
                    fd = os.open(self._path, os.O_CREAT | os.O_WRONLY, 0o600)
                    os.close(fd)
                conn = sqlite3.connect(
                    self._path,
                    timeout=self._timeout_s,
                    isolation_level=None,  # autocommit; writes use explicit transactions
                    check_same_thread=False,  # guarded by self._lock
                )
            except (OSError, sqlite3.Error) as exc:
                raise TemplateStoreError(f"cannot open template store {self._path}: {exc}") from exc
            try:
                conn.execute(f"PRAGMA busy_timeout = {int(self._timeout_s * 1000)}")
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise TemplateStoreError(
                        f"{self._path}: cannot switch to WAL journal mode (got {mode})"
                    )
                conn.execute("PRAGMA synchronous = NORMAL")  # durable at checkpoints in WAL
                conn.execute("BEGIN IMMEDIATE")
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('version', 0)")
                row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                conn.close()
                raise TemplateStoreError(f"{self._path} is not a template store: {exc}") from exc
            except TemplateStoreError:
                conn.close()
                raise
            if int(row[0]) != SCHEMA_VERSION:
                conn.close()
                raise TemplateStoreError(
                    f"{self._path}: schema version {row[0]}, this code reads {SCHEMA_VERSION}"
                )
            self._conn = conn
            self._seen_version = None
        return self

    def close(self) -> None:
        """Close the connection. Safe to call more than once."""
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def __enter__(self) -> TemplateStore:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"
        return f"<TemplateStore {self._path} dim={self._dim} {state}>"

    # -- internals -----------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise TemplateStoreError(f"template store {self._path} is not open")
        return self._conn

    def _write(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")

    @staticmethod
    def _bump(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'version'")

    # -- API -----------------------------------------------------------------------------------

    def enroll(
        self,
        user: str,
        embeddings: np.ndarray,
        *,
        model_id: str,
        extend: bool = False,
    ) -> UserRecord:
        """Store ``user``'s template for ``model_id`` from ``embeddings`` ``(n, dim)`` float.

        Each row is normalised to unit length; the template is the normalised mean. With
        ``extend`` the rows are added to the existing template (if any), else they replace it.
        Returns the stored record. Raises ``ValueError`` for bad arguments (including a mean
        that is zero: embeddings that cancel out) and :class:`TemplateStoreError`.
        """
        _check_user(user)
        _check_model_id(model_id)
        e = np.asarray(embeddings, dtype=np.float64)
        if e.ndim == 1:
            e = e[None, :]
        if e.ndim != 2 or e.shape[0] < 1 or e.shape[1] != self._dim:
            raise ValueError(f"embeddings must be (n >= 1, {self._dim}), got {e.shape}")
        if not np.isfinite(e).all():
            raise ValueError("embeddings hold NaN or infinite values")
        norms = np.linalg.norm(e, axis=1, keepdims=True)
        if (norms <= 0).any():
            raise ValueError("an embedding is all zeros")
        total = (e / norms).sum(axis=0)
        n = int(e.shape[0])
        now = time.time()
        with self._lock:
            conn = self._connection()
            try:
                self._write(conn)
                try:
                    created = now
                    if extend:
                        row = conn.execute(
                            "SELECT n_beats, sum, created_s FROM templates"
                            " WHERE user = ? AND model_id = ?",
                            (user, model_id),
                        ).fetchone()
                        if row is not None:
                            total = total + np.frombuffer(row[1], dtype="<f8")
                            n += int(row[0])
                            created = float(row[2])
                    norm = float(np.linalg.norm(total))
                    if not norm > 1e-9 * n:
                        raise ValueError("the embeddings cancel out: no direction to enrol")
                    template = (total / norm).astype("<f4")
                    existing = conn.execute(
                        "SELECT created_s FROM templates WHERE user = ? AND model_id = ?",
                        (user, model_id),
                    ).fetchone()
                    if existing is not None and not extend:
                        created = float(existing[0])
                    conn.execute(
                        "INSERT OR REPLACE INTO templates VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            user,
                            model_id,
                            self._dim,
                            n,
                            template.tobytes(),
                            total.astype("<f8").tobytes(),
                            created,
                            now,
                        ),
                    )
                    self._bump(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise TemplateStoreError(f"{self._path}: cannot enrol {user!r}: {exc}") from exc
        return UserRecord(
            user=user, model_id=model_id, n_beats=n, created_s=created, updated_s=now
        )

    def users(self, model_id: str | None = None) -> list[UserRecord]:
        """Enrolled templates (all models, or ``model_id``'s), sorted by user then model."""
        query = "SELECT user, model_id, n_beats, created_s, updated_s FROM templates"
        args: tuple[str, ...] = ()
        if model_id is not None:
            query += " WHERE model_id = ?"
            args = (model_id,)
        with self._lock:
            conn = self._connection()
            try:
                rows = conn.execute(query + " ORDER BY user, model_id", args).fetchall()
            except sqlite3.Error as exc:
                raise TemplateStoreError(f"{self._path}: cannot list users: {exc}") from exc
        return [
            UserRecord(user=u, model_id=m, n_beats=int(n), created_s=float(c), updated_s=float(t))
            for u, m, n, c, t in rows
        ]

    def remove(self, user: str, model_id: str | None = None) -> bool:
        """Delete ``user``'s templates (all models, or only ``model_id``'s).

        Returns whether anything was deleted.
        """
        _check_user(user)
        query = "DELETE FROM templates WHERE user = ?"
        args: tuple[str, ...] = (user,)
        if model_id is not None:
            query += " AND model_id = ?"
            args = (user, model_id)
        with self._lock:
            conn = self._connection()
            try:
                self._write(conn)
                try:
                    deleted = conn.execute(query, args).rowcount
                    if deleted:
                        self._bump(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise TemplateStoreError(f"{self._path}: cannot remove {user!r}: {exc}") from exc
        return deleted > 0

    def templates(self, model_id: str) -> tuple[list[str], np.ndarray]:
        """``(names, matrix)``: users sorted by name and their unit templates, float32
        ``(U, dim)`` (``(0, dim)`` when nobody is enrolled for ``model_id``).

        Also marks the store's current version as seen (see :meth:`changed`).
        """
        _check_model_id(model_id)
        with self._lock:
            conn = self._connection()
            try:
                # one read transaction: the version and the rows come from the same snapshot
                conn.execute("BEGIN")
                try:
                    version = conn.execute(
                        "SELECT value FROM meta WHERE key = 'version'"
                    ).fetchone()[0]
                    rows = conn.execute(
                        "SELECT user, dim, template FROM templates WHERE model_id = ?"
                        " ORDER BY user",
                        (model_id,),
                    ).fetchall()
                finally:
                    conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise TemplateStoreError(f"{self._path}: cannot read templates: {exc}") from exc
            self._seen_version = int(version)
        names: list[str] = []
        matrix = np.zeros((len(rows), self._dim), dtype=np.float32)
        for i, (user, dim, blob) in enumerate(rows):
            if int(dim) != self._dim:
                raise TemplateStoreError(
                    f"{self._path}: template of {user!r} has dim {dim}, expected {self._dim}"
                )
            names.append(user)
            matrix[i] = np.frombuffer(blob, dtype="<f4")
        return names, matrix

    def version(self) -> int:
        """The store's change counter: +1 per committed enrol or effective remove."""
        with self._lock:
            conn = self._connection()
            try:
                row = conn.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
            except sqlite3.Error as exc:
                raise TemplateStoreError(f"{self._path}: cannot read version: {exc}") from exc
        return int(row[0])

    def changed(self) -> bool:
        """Whether any process changed the store since this object last looked.

        "Looked" = the last :meth:`templates` or :meth:`changed` call; the first call returns
        True. Cheap (one primary-key read): poll it before each batch.
        """
        current = self.version()
        with self._lock:
            changed = current != self._seen_version
            self._seen_version = current
        return changed
