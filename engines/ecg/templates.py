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

Encryption at rest: with a key file (``key_file``, made by :func:`create_templates_key`: 32
random bytes, base64, mode 0600) every template and sum is sealed with AES-256-GCM
(``cryptography``), a fresh 96-bit nonce per blob and the row's user, model and column as
associated data (a blob moved to another row does not open). User names, beat counts and times
stay readable. A store remembers whether it is encrypted and with which key (a key id: a hash,
not the key): opening it without its key, with another key, or opening a plain store with a
key raises :class:`TemplateStoreError`. This protects templates on a stolen disk or backup; it
does not protect them on a running host whose key file an intruder can read.

Errors: :class:`TemplateStoreError` (an :class:`~engines.errors.EngineError`) for anything the
database does wrong (unreadable file, locked for longer than the timeout, foreign schema);
``ValueError`` for bad arguments (empty user name, embeddings of the wrong shape or not finite).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import secrets
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from devices.lifecycle import ClosesOnExit
from engines.errors import EngineError

__all__ = [
    "SCHEMA_VERSION",
    "TemplateStore",
    "TemplateStoreError",
    "UserRecord",
    "create_templates_key",
    "read_templates_key",
]

SCHEMA_VERSION = 1
_MAX_USER_LEN = 256
_KEY_BYTES = 32  # AES-256
_NONCE_BYTES = 12

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


def create_templates_key(path: str | os.PathLike[str]) -> Path:
    """Write a new random key for :class:`TemplateStore` into ``path`` (mode 0600, private from
    its first byte); refuses to overwrite a file (its templates would be lost with it)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        raise TemplateStoreError(f"{path} exists; a key is never overwritten") from None
    except OSError as exc:
        raise TemplateStoreError(f"cannot write the templates key {path}: {exc}") from exc
    with os.fdopen(fd, "w") as f:
        f.write(base64.urlsafe_b64encode(secrets.token_bytes(_KEY_BYTES)).decode() + "\n")
    return path


def read_templates_key(path: str | os.PathLike[str]) -> bytes:
    """The 32-byte key in ``path`` (see :func:`create_templates_key`). Raises
    :class:`TemplateStoreError` for a missing or malformed file, or one others can read."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        text = path.read_bytes()[:1024].strip()
    except OSError as exc:
        raise TemplateStoreError(f"cannot read the templates key {path}: {exc}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise TemplateStoreError(f"{path} is readable by others (mode {stat.S_IMODE(mode):04o});"
                                 f" run chmod 600 {path}")
    try:
        key = base64.urlsafe_b64decode(text)
    except ValueError:
        key = b""
    if len(key) != _KEY_BYTES:
        raise TemplateStoreError(f"{path} is not a templates key (32 bytes, base64)")
    return key


def _key_id(key: bytes | None) -> int:
    """What a store records of its key: 0 for none, else 56 bits of a hash of it."""
    if key is None:
        return 0
    digest = hashlib.sha256(b"sigstream templates key id\0" + key).digest()
    return int.from_bytes(digest[:7], "big") | 1


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


def _aad(user: str, model_id: str, column: str) -> bytes:
    return f"{user}\0{model_id}\0{column}".encode()


class TemplateStore(ClosesOnExit):
    """SQLite-backed template store (see the module docstring).

    ``path``: the database file (created on :meth:`open`, parent folders too). ``dim``: the
    embedding size every template must have. ``key_file``: encrypt the templates with this key
    (see the module docstring). ``busy_timeout_s``: how long a call waits for
    another process's write lock before raising :class:`TemplateStoreError`.
    The constructor does no I/O; :meth:`open` connects, :meth:`close` releases (safe twice);
    ``with TemplateStore(p) as store:`` does both.
    """

    def __init__(self, path: str | os.PathLike[str], *, dim: int = 64,
                 busy_timeout_s: float = 10.0,
                 key_file: str | os.PathLike[str] | None = None) -> None:
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
        self._key_file = None if key_file is None else Path(key_file)
        self._aead: Any = None  # AESGCM with the key, while open

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
            key = None if self._key_file is None else read_templates_key(self._key_file)
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
                key_problem = self._record_key(conn, _key_id(key))
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
            if key_problem:
                conn.close()
                raise TemplateStoreError(f"{self._path}: {key_problem}")
            if key is not None:
                from cryptography.hazmat.primitives.ciphers.aead import AESGCM

                self._aead = AESGCM(key)
            self._conn = conn
            self._seen_version = None
        return self

    def close(self) -> None:
        """Close the connection. Safe to call more than once."""
        with self._lock:
            conn, self._conn = self._conn, None
            self._aead = None
        if conn is not None:
            conn.close()

    def __enter__(self) -> TemplateStore:
        return self.open()

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"
        return f"<TemplateStore {self._path} dim={self._dim} {state}>"

    # -- internals -----------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise TemplateStoreError(f"template store {self._path} is not open")
        return self._conn

    @staticmethod
    def _record_key(conn: sqlite3.Connection, key_id: int) -> str | None:
        """Record which key a new store uses; for an existing one, why ``key_id`` cannot
        open it (``None``: it can)."""
        row = conn.execute("SELECT value FROM meta WHERE key = 'key_id'").fetchone()
        if row is None:
            if key_id and conn.execute("SELECT 1 FROM templates LIMIT 1").fetchone():
                return "it holds unencrypted templates; it cannot be opened with a key"
            conn.execute("INSERT INTO meta VALUES ('key_id', ?)", (key_id,))
            return None
        stored = int(row[0])
        if stored == key_id:
            return None
        if not stored:
            return "its templates are not encrypted; open it without a key"
        if not key_id:
            return "its templates are encrypted; give its key file (--templates-key)"
        return "its templates are encrypted with another key"

    def _seal(self, blob: bytes, user: str, model_id: str, column: str) -> bytes:
        if self._aead is None:
            return blob
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return nonce + bytes(self._aead.encrypt(nonce, blob, _aad(user, model_id, column)))

    def _unseal(self, blob: bytes, user: str, model_id: str, column: str) -> bytes:
        if self._aead is None:
            return blob
        from cryptography.exceptions import InvalidTag

        try:
            return bytes(self._aead.decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:],
                                            _aad(user, model_id, column)))
        except InvalidTag:
            raise TemplateStoreError(
                f"{self._path}: the {column} of {user!r} does not decrypt (altered?)") from None

    @contextlib.contextmanager
    def _writing(self, what: str) -> Iterator[sqlite3.Connection]:
        """The open connection, under the store's lock and in one write transaction
        (``BEGIN IMMEDIATE``): committed when the block ends, rolled back when it raises; a
        database error becomes a :class:`TemplateStoreError` "cannot ``what``"."""
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise TemplateStoreError(f"{self._path}: cannot {what}: {exc}") from exc

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
        with self._writing(f"enrol {user!r}") as conn:
            created = now
            if extend:
                row = conn.execute(
                    "SELECT n_beats, sum, created_s FROM templates"
                    " WHERE user = ? AND model_id = ?",
                    (user, model_id),
                ).fetchone()
                if row is not None:
                    total = total + np.frombuffer(
                        self._unseal(row[1], user, model_id, "sum"), dtype="<f8")
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
                    self._seal(template.tobytes(), user, model_id, "template"),
                    self._seal(total.astype("<f8").tobytes(), user, model_id, "sum"),
                    created,
                    now,
                ),
            )
            self._bump(conn)
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
        with self._writing(f"remove {user!r}") as conn:
            deleted = conn.execute(query, args).rowcount
            if deleted:
                self._bump(conn)
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
            matrix[i] = np.frombuffer(self._unseal(blob, user, model_id, "template"), dtype="<f4")
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
