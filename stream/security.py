"""CURVE security for every external socket (libzmq's Ironhouse pattern), and the bind rule.

With keys, every external socket is encrypted and authenticated with CURVE: a server socket
(the service's ingest PULL and publish PUB, ``codec-rx``'s PULL) holds the server's key pair
and accepts only clients whose public key is listed; a client socket (``sigstream source``,
``tap``, ``ecg enroll --stream``, ``codec-tx``) holds its own key pair and the server's public
key, so it talks only to the real server. The list is enforced by a ZAP handler
(:class:`zmq.auth.thread.ThreadAuthenticator`) in the server socket's context, whose user id for
a CURVE client is the client's public key (z85 text): every message a server receives carries
it (``zmq.Frame.get("User-Id")``) and the service stamps it into the header it forwards as
:data:`PEER_KEY`, so a result says which device sent it, unforgeably.

A key folder (``--keys DIR``) as ``sigstream keys generate`` lays it out::

    DIR/server.key, DIR/server.key_secret   the server's pair (``--key NAME`` picks another)
    DIR/client.key, DIR/client.key_secret   a client's pair (``--key NAME`` picks another)
    DIR/allowed/*.key                       public keys of the clients a server accepts
    DIR/subscribers/*.key                   optional: the only keys that may subscribe to
                                            results (default: those of allowed/)

A server needs its secret file and ``allowed/``; a client needs its secret file and the
server's public file. Files are those of :func:`zmq.auth.create_certificates`; a secret file
must be readable by its owner only (0600), or it is refused.

Without keys nothing is encrypted or authenticated, so a socket may then bind loopback (or
``ipc://``) only, unless the user says ``--insecure`` (:func:`check_bind`).

Errors: :class:`~stream.errors.SecurityError`. Threads: :class:`ServerGuard` runs the ZAP
handler on its own thread; everything else runs on the caller's.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import zmq
from zmq.utils import z85

from stream.errors import SecurityError
from stream.wire import stamp

__all__ = [
    "ALLOWED_DIR",
    "PEER_KEY",
    "RefusedConnections",
    "SUBSCRIBERS_DIR",
    "ClientSecurity",
    "ServerGuard",
    "ServerSecurity",
    "check_bind",
    "client_context",
    "curve_server",
    "generate_keys",
    "is_local",
    "read_public_key",
    "secure_server",
    "stamp_peer",
]

PEER_KEY = "peer"
"""Header key the service sets on every message it ingests: the sender's authenticated public
key (z85 text), or absent without CURVE. Whatever a sender puts there is overwritten."""
ALLOWED_DIR = "allowed"
SUBSCRIBERS_DIR = "subscribers"
_Z85_KEY_CHARS = 40
_ZAP_DOMAIN = "sigstream"


# ---------------------------------------------------------------------------------------------
# Key files


def generate_keys(folder: str | os.PathLike[str], name: str) -> tuple[Path, Path]:
    """Make a CURVE key pair ``folder/name.key`` (public, 0644) and ``name.key_secret``
    (secret, 0600; created private, never readable by others even for a moment).

    Refuses to overwrite an existing pair: a server's clients hold its public key.
    Returns ``(public_file, secret_file)``.
    """
    import zmq.auth

    if not name or "/" in name or name.startswith(".") or not name.isprintable():
        raise SecurityError(f"key name must be a plain file name, got {name!r}")
    folder = Path(folder)
    public, secret = folder / f"{name}.key", folder / f"{name}.key_secret"
    for path in (public, secret):
        if path.exists():
            raise SecurityError(f"{path} exists; remove it first to make a new key pair")
    folder.mkdir(parents=True, exist_ok=True)
    old = os.umask(0o077)  # the secret file is written private from its first byte
    try:
        zmq.auth.create_certificates(folder, name)
    except OSError as exc:
        raise SecurityError(f"cannot write keys into {folder}: {exc}") from exc
    finally:
        os.umask(old)
    public.chmod(0o644)
    secret.chmod(0o600)
    return public, secret


def _read_key_file(path: Path) -> tuple[bytes, bytes | None]:
    import zmq.auth

    if not path.is_file():
        raise SecurityError(f"no key file {path}")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise SecurityError(f"{path} is not a CURVE key file: {exc}") from exc
    if public is None or len(public) != _Z85_KEY_CHARS:
        raise SecurityError(f"{path} holds no valid public key")
    return public, secret


def read_public_key(source: str | os.PathLike[str]) -> bytes:
    """A public key (z85, 40 bytes) from a ``.key``/``.key_secret`` file, or given as its
    40-character z85 text (as results show it in ``peer``)."""
    text = os.fspath(source)
    if len(text) == _Z85_KEY_CHARS and not Path(text).exists():
        try:
            z85.decode(text)
        except (ValueError, KeyError) as exc:
            raise SecurityError(f"{text!r} is neither a key file nor a z85 public key") from exc
        return text.encode("ascii")
    return _read_key_file(Path(text))[0]


def _read_secret_file(path: Path) -> tuple[bytes, bytes]:
    """``(public, secret)`` of a ``.key_secret`` file that only its owner can read."""
    public, secret = _read_key_file(path)
    if secret is None or len(secret) != _Z85_KEY_CHARS:
        raise SecurityError(f"{path} holds no secret key (a .key_secret file is needed)")
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecurityError(f"{path} is readable by others (mode {stat.S_IMODE(mode):04o}); "
                            f"run chmod 600 {path}")
    return public, secret


def _read_key_folder(folder: Path) -> frozenset[bytes]:
    if not folder.is_dir():
        raise SecurityError(f"no folder {folder} of allowed client keys")
    keys = frozenset(_read_key_file(p)[0] for p in sorted(folder.glob("*.key")))
    if not keys:
        raise SecurityError(f"{folder} holds no public key (*.key): no client could connect")
    return keys


# ---------------------------------------------------------------------------------------------
# Settings of each end


@dataclass(frozen=True, kw_only=True)
class ServerSecurity:
    """A CURVE server: its key pair (z85) and the client public keys (z85) it accepts.

    Frozen and picklable: it travels to the stage processes in their configurations.
    ``subscribers``: the keys allowed on a publish socket, where they differ from ``allowed``.
    """

    public_key: bytes
    secret_key: bytes
    allowed: frozenset[bytes]
    subscribers: frozenset[bytes] | None = None

    @classmethod
    def from_folder(cls, folder: str | os.PathLike[str], name: str = "server"
                    ) -> ServerSecurity:
        """Read ``folder/name.key_secret``, ``folder/allowed/`` and, if present,
        ``folder/subscribers/`` (see the module docstring)."""
        folder = Path(folder)
        public, secret = _read_secret_file(folder / f"{name}.key_secret")
        subscribers = folder / SUBSCRIBERS_DIR
        return cls(
            public_key=public, secret_key=secret, allowed=_read_key_folder(folder / ALLOWED_DIR),
            subscribers=_read_key_folder(subscribers) if subscribers.exists() else None,
        )

    def for_publishing(self) -> ServerSecurity:
        """The settings of a publish socket: ``subscribers`` where given."""
        if self.subscribers is None:
            return self
        return replace(self, allowed=self.subscribers, subscribers=None)


@dataclass(frozen=True, kw_only=True)
class ClientSecurity:
    """A CURVE client: its key pair and the public key of the server it talks to (z85)."""

    public_key: bytes
    secret_key: bytes
    server_key: bytes

    @classmethod
    def from_folder(cls, folder: str | os.PathLike[str], name: str = "client",
                    server: str = "server") -> ClientSecurity:
        """Read ``folder/name.key_secret`` and the server's ``folder/server.key``."""
        folder = Path(folder)
        public, secret = _read_secret_file(folder / f"{name}.key_secret")
        return cls(public_key=public, secret_key=secret,
                   server_key=_read_key_file(folder / f"{server}.key")[0])

    def apply(self, sock: zmq.Socket[Any]) -> None:
        """Make ``sock`` a CURVE client; before it connects."""
        sock.curve_secretkey = self.secret_key
        sock.curve_publickey = self.public_key
        sock.curve_serverkey = self.server_key

    def context(self) -> zmq.Context[Any]:
        """A new context whose every socket is a CURVE client of this server (pyzmq's default
        socket options), for code that makes its own sockets from a context it is given."""
        ctx: zmq.Context[Any] = zmq.Context()
        ctx.setsockopt(zmq.CURVE_SECRETKEY, self.secret_key)
        ctx.setsockopt(zmq.CURVE_PUBLICKEY, self.public_key)
        ctx.setsockopt(zmq.CURVE_SERVERKEY, self.server_key)
        return ctx


def client_context(security: ClientSecurity | None) -> zmq.Context[Any]:
    """A context for client sockets: CURVE with ``security``, plain without."""
    return zmq.Context() if security is None else security.context()


# ---------------------------------------------------------------------------------------------
# The server side


class _AllowedKeys:
    """ZAP credentials provider: accepts the listed client keys (z85), nothing else."""

    def __init__(self, keys: frozenset[bytes]) -> None:
        self._keys = keys

    def callback(self, domain: str, key: bytes) -> bool:
        return key in self._keys


class ServerGuard:
    """The ZAP handler of one context: a :class:`~zmq.auth.thread.ThreadAuthenticator` that
    accepts the CURVE clients of ``allowed`` (user id: the client's public key, z85).

    One per context (ZAP binds a fixed in-process endpoint). :meth:`start` before the guarded
    sockets bind; :meth:`close` (safe twice) before the context terminates, which would else
    wait for the handler's sockets forever.
    """

    def __init__(self, ctx: zmq.Context[Any], allowed: frozenset[bytes]) -> None:
        self._ctx = ctx
        self._allowed = allowed
        self._auth: Any = None

    def start(self) -> None:
        from zmq.auth.thread import ThreadAuthenticator

        auth = ThreadAuthenticator(self._ctx)
        auth.start()
        auth.configure_curve_callback(_ZAP_DOMAIN, credentials_provider=_AllowedKeys(
            self._allowed))
        self._auth = auth

    def close(self) -> None:
        auth, self._auth = self._auth, None
        if auth is not None:
            auth.stop()


def secure_server(sock: zmq.Socket[Any], security: ServerSecurity | None) -> ServerGuard | None:
    """Make ``sock`` a CURVE server accepting ``security.allowed`` only, and start its context's
    ZAP handler; call before ``sock`` binds. ``None``: no security, nothing done (the bind rule
    of :func:`check_bind` is the caller's). Returns the guard to close before the context
    terminates."""
    if security is None:
        return None
    guard = ServerGuard(sock.context, security.allowed)
    guard.start()
    curve_server(sock, security)
    return guard


def curve_server(sock: zmq.Socket[Any], security: ServerSecurity) -> None:
    """Make ``sock`` a CURVE server checked by the ZAP handler already running in its context
    (:func:`secure_server` started it for another socket of the same stage)."""
    sock.zap_domain = _ZAP_DOMAIN.encode()
    sock.curve_secretkey = security.secret_key
    sock.curve_publickey = security.public_key
    sock.curve_server = True


class RefusedConnections:
    """Counts the connection attempts a CURVE server socket refused (a key not listed, a
    client without CURVE, a client with another server's key), from the socket's monitor:
    what such a client sends never arrives, so this is the only trace it leaves. A client
    retries, so one stranger makes one attempt per reconnect interval. Call from the socket's
    thread; :meth:`close` (safe twice) before the socket closes."""

    _EVENTS = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
               | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)

    def __init__(self, sock: zmq.Socket[Any]) -> None:
        self._sock = sock
        self._monitor: zmq.Socket[Any] | None = sock.get_monitor_socket(self._EVENTS)

    def take(self) -> int:
        """Refused attempts since the last call."""
        n = 0
        while self._monitor is not None:
            try:
                self._monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            n += 1
        return n

    def close(self) -> None:
        monitor, self._monitor = self._monitor, None
        if monitor is not None:
            if not self._sock.closed:
                self._sock.disable_monitor()
            monitor.close(linger=0)


def stamp_peer(header: dict[str, Any], frames: list[Any], authenticated: bool) -> list[Any]:
    """Set :data:`PEER_KEY` in ``header`` to the sender's authenticated key, or remove it
    without authentication, so no sender can claim to be another (:func:`stream.wire.stamp`).

    ``frames``: as received with ``copy=False`` (``zmq.Frame``, which carries the ZAP user id).
    """
    peer = str(frames[0].get("User-Id")) if authenticated else None
    return stamp(header, frames, PEER_KEY, peer)


# ---------------------------------------------------------------------------------------------
# The bind rule


def is_local(endpoint: str) -> bool:
    """Whether ``endpoint`` can only be reached from this machine: ``ipc://``, ``inproc://``,
    or ``tcp://`` on a loopback address (``127.0.0.0/8``, ``::1``, ``localhost``). A wildcard
    (``*``, ``0.0.0.0``), an interface name or any other host is not."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    if not endpoint.startswith("tcp://"):
        return False
    host = endpoint[len("tcp://"):].rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(endpoint: str, *, secured: bool, insecure: bool, what: str) -> None:
    """Refuse to bind ``endpoint`` for ``what`` where anyone on the network could reach it
    without keys: raises :class:`SecurityError` unless it is local (:func:`is_local`), the
    socket is ``secured`` with CURVE, or the user said ``insecure``."""
    if secured or insecure or is_local(endpoint):
        return
    raise SecurityError(
        f"refusing to bind {what} {endpoint} without keys: anyone who can reach it could send "
        "or read; give --keys DIR (see `sigstream keys generate`), bind 127.0.0.1, or say "
        "--insecure"
    )
