"""Security with real processes and sockets: CURVE keys from ``sigstream keys``, a service that
serves only listed keys, the live-enrolment hijack and the codec-link takeover of issue 10
failing, claims that cannot enumerate users, templates encrypted at rest, and non-loopback
binds refused without keys (before anything binds: no traffic is sent)."""

from __future__ import annotations

import shutil
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq
from service_client import TIMEOUT_S, Client, free_port, term_context, wait_until

from devices import cohort_subject, simulate_record
from engines.ecg.specs import ECG_SPECS
from engines.ecg.templates import TemplateStore, TemplateStoreError
from stream.cli import main
from stream.paths.ecg import EcgSettings
from stream.security import ClientSecurity, ServerSecurity, read_public_key
from stream.service import Service, ServiceConfig
from stream.wire import Message, data_message, encode

FS = 250.0
CHUNK = 62
LISTED = ("wearable-7", "mallory", "tap")  # mallory: a listed key of another device


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A key folder as the docs set it up: server, listed clients, and one stranger."""
    folder = tmp_path_factory.mktemp("keys")
    for name in ("server", *LISTED, "stranger"):
        assert main(["keys", "generate", "--out", str(folder), "--name", name]) == 0
    (folder / "allowed").mkdir()
    for name in LISTED:
        shutil.copy(folder / f"{name}.key", folder / "allowed")
    return folder


def _pub(keys: Path, name: str) -> str:
    return read_public_key(keys / f"{name}.key").decode()


def _non_loopback_address() -> str:
    """An address of this machine that is not loopback (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: only picks the outgoing interface
            address = str(s.getsockname()[0])
        except OSError:
            address = "0.0.0.0"
    return "0.0.0.0" if address.startswith("127.") else address


# ---------------------------------------------------------------------------------------------
# Keys and the bind rule (no service needed)


def test_keys_are_generated_private_and_never_overwritten(keys: Path, capsys: Any) -> None:
    secret = keys / "server.key_secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE((keys / "server.key").stat().st_mode) == 0o644
    assert main(["keys", "generate", "--out", str(keys), "--name", "server"]) == 2
    assert "exists" in capsys.readouterr().err
    templates_key = keys / "templates.key"
    assert main(["keys", "templates-key", "--out", str(templates_key)]) == 0
    assert stat.S_IMODE(templates_key.stat().st_mode) == 0o600
    assert main(["keys", "templates-key", "--out", str(templates_key)]) == 2
    loose = keys.parent / "loose"
    shutil.copytree(keys, loose)
    (loose / "server.key_secret").chmod(0o644)
    capsys.readouterr()
    assert main(["run", "spectral", "--keys", str(loose)]) == 2
    assert "readable by others" in capsys.readouterr().err


def test_non_loopback_binds_without_keys_are_refused(keys: Path, tmp_path: Path,
                                                     capsys: Any) -> None:
    address = _non_loopback_address()
    port = free_port()
    for argv in (
        ["run", "spectral", "--ingest", f"tcp://{address}:{port}"],
        ["run", "ecg", "--publish", f"tcp://{address}:{port}", "--templates",
         str(tmp_path / "t.sqlite")],
        ["run", "codec-rx", "--bind", f"tcp://{address}:{port}", "--output",
         str(tmp_path / "out.wav")],
        ["run", "codec-rx", "--bind", f"tcp://*:{port}", "--output", str(tmp_path / "o.wav")],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "refusing to bind" in err[0] and "--insecure" in err[0], err
    # Nothing was bound: the port is still free.
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
    with pytest.raises(Exception, match="refusing"):
        ServiceConfig(path="spectral", ingest=f"tcp://{address}:{port}")
    endpoint = f"tcp://{address}:{port}"
    assert ServiceConfig(path="spectral", ingest=endpoint, insecure=True).insecure
    security = ServerSecurity.from_folder(keys)
    assert ServiceConfig(path="spectral", ingest=endpoint, security=security).security
    assert ServiceConfig(path="spectral").metrics_addr == "127.0.0.1"


def test_live_enrolment_without_keys_needs_insecure(tmp_path: Path, capsys: Any) -> None:
    assert main(["ecg", "--db", str(tmp_path / "t.sqlite"), "enroll", "--user", "bob",
                 "--stream", "wearable-7", "--timeout", "0.1"]) == 2
    assert "--insecure" in capsys.readouterr().err


def test_templates_are_encrypted_at_rest(keys: Path, tmp_path: Path) -> None:
    key = tmp_path / "k"
    assert main(["keys", "templates-key", "--out", str(key)]) == 0
    db = tmp_path / "users.sqlite"
    template = np.random.default_rng(0).normal(size=64).astype(np.float32)
    template /= np.linalg.norm(template)
    with TemplateStore(db, key_file=key) as store:
        store.enroll("alice", template[None, :], model_id="m")
        names, matrix = store.templates("m")
    assert names == ["alice"] and np.allclose(matrix[0], template, atol=1e-6)
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("users.sqlite*"))
    assert template.tobytes() not in raw and template.astype("<f8").tobytes()[:16] not in raw
    other = tmp_path / "other"
    assert main(["keys", "templates-key", "--out", str(other)]) == 0
    for key_file, message in ((None, "encrypted"), (other, "another key")):
        with pytest.raises(TemplateStoreError, match=message):
            TemplateStore(db, key_file=key_file).open()


# ---------------------------------------------------------------------------------------------
# A secured ECG gateway


def _record(subject: int, session: int, seconds: float) -> np.ndarray:
    return simulate_record(cohort_subject(subject), session, fs_hz=FS, duration_s=seconds).signal


@pytest.fixture(scope="module")
def gateway(keys: Path, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[Service, Path, Path]]:
    if not ECG_SPECS["embedding"].weights_path.exists():
        pytest.skip("no shipped ECG embedding weights")
    tmp = tmp_path_factory.mktemp("gateway")
    db, templates_key = tmp / "users.sqlite", tmp / "templates.key"
    assert main(["keys", "templates-key", "--out", str(templates_key)]) == 0
    for user, subject in (("alice", 0), ("bob", 1)):
        csv = tmp / f"{user}.csv"
        np.savetxt(csv, _record(subject, 0, 40.0), fmt="%.5f", header="ecg", comments="")
        assert main(["ecg", "--db", str(db), "--templates-key", str(templates_key), "enroll",
                     "--user", user, "--file", str(csv), "--fs", str(FS)]) == 0
    service = Service(ServiceConfig(
        path="ecg", ingest="tcp://127.0.0.1:*", publish="tcp://127.0.0.1:*", backend="auto",
        settings=EcgSettings(templates=db, templates_key=templates_key),
        cache_dir=tmp / "cache", max_batch=8,
        queue_depth=256, stats_interval_s=0.1, stop_timeout_s=20.0,
        security=ServerSecurity.from_folder(keys),
    ))
    service.start()
    try:
        yield service, db, templates_key
    finally:
        service.stop(timeout_s=20)


def _peer(clients: Callable[..., Client], service: Service, keys: Path, key: str | None,
          streams: tuple[str, ...] = ()) -> Client:
    """One client machine, with ``key`` (a name in the key folder) or, with ``key=None``, no
    CURVE at all; subscribed to the ECG results and errors of ``streams``. An unlisted one is
    refused: it never hears back, and its messages have no connection to wait in."""
    listed = key in LISTED
    return clients(
        service.bound_ingest, service.bound_publish,
        topics=[f"{prefix}/{stream}" for stream in streams for prefix in ("result.ecg", "error")],
        context=zmq.Context() if key is None else ClientSecurity.from_folder(keys, key).context(),
        probe=listed, blocking=listed)


def _send(client: Client, stream: str, signal: np.ndarray, **kwargs: Any) -> int:
    """``signal`` in chunks of :data:`CHUNK`; returns the next seq."""
    return client.send_signal("ecg", stream, signal, chunk=CHUNK, fs=FS, **kwargs)


def _beats(msgs: list[Message], stream: str) -> list[dict[str, Any]]:
    return [m.payload for m in msgs
            if m.stream == stream and m.kind == "result.ecg" and m.payload["type"] == "beat"]


def test_only_listed_keys_can_send_or_subscribe(gateway, keys: Path, clients) -> None:  # type: ignore[no-untyped-def]
    service, _, _ = gateway
    watcher = _peer(clients, service, keys, "tap", ("s-anon", "s-stranger", "s-good"))
    anonymous = _peer(clients, service, keys, None, ("s-good",))
    stranger = _peer(clients, service, keys, "stranger", ("s-good",))
    device = _peer(clients, service, keys, "wearable-7")
    # The refused ones tried (and were refused) at the ingest and publisher sockets.
    wait_until(lambda: all(service.stats()[stage]["refused_connections"] >= 2
                           for stage in ("ingest", "publisher")), "strangers are refused")
    signal = _record(0, 1, 12.0)
    _send(anonymous, "s-anon", signal)
    _send(stranger, "s-stranger", signal)
    # A sender cannot forge who it is: ingest overwrites "peer".
    n = _send(device, "s-good", signal, peer=_pub(keys, "mallory"))
    seen = watcher.settle(service, {"s-good": n})
    sniffed = anonymous.drain() + stranger.drain()
    good = _beats(seen, "s-good")
    assert len(good) >= 5
    assert {b["peer"] for b in good} == {_pub(keys, "wearable-7")}
    # Nothing the refused clients sent was answered, counted or even seen as a stream, and
    # they received none of the results published meanwhile.
    assert not [m for m in seen if m.stream in ("s-anon", "s-stranger")]
    assert sniffed == []
    summary = service.summary()
    assert "s-good" in summary and "s-anon" not in summary and "s-stranger" not in summary
    # Their only trace: the refused connection attempts, counted at the ingest socket.
    stats = service.stats()
    assert stats["ingest"]["refused_connections"] >= 2
    assert stats["publisher"]["refused_connections"] >= 2


def test_unknown_claim_is_answered_like_a_failed_claim(gateway, keys: Path, clients) -> None:  # type: ignore[no-untyped-def]
    service, _, _ = gateway
    peer = _peer(clients, service, keys, "wearable-7", ("c-unknown", "c-failed"))
    signal = _record(0, 1, 16.0)  # alice's heart
    msgs = peer.settle(service, {
        "c-unknown": _send(peer, "c-unknown", signal, claim="nobody-enrolled"),
        "c-failed": _send(peer, "c-failed", signal, claim="bob")})
    unknown, failed = _beats(msgs, "c-unknown"), _beats(msgs, "c-failed")
    assert len(unknown) >= 5 and len(failed) >= 5

    def keys_of(body: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...] | None]:
        fused = body["fused"]
        return tuple(sorted(body)), None if fused is None else tuple(sorted(fused))

    ok_unknown = [b for b in unknown if b["quality"] == "ok"]
    ok_failed = [b for b in failed if b["quality"] == "ok"]
    assert ok_unknown and ok_failed
    # The same fields (identification aside, which does not depend on the claim: the same
    # heart on both streams), and the claim's answer is the same: no score to compare.
    assert {keys_of(b) for b in ok_unknown} == {keys_of(b) for b in ok_failed}
    for body in ok_unknown + ok_failed:
        for decision in (body, body["fused"] or body):
            assert decision["verified"] is False and "claim_score" not in decision
            assert isinstance(decision["claim"], str)


def test_live_enrolment_hijack_fails(gateway, keys: Path, clients) -> None:  # type: ignore[no-untyped-def]
    """Issue 10: while `ecg enroll --user carol --stream wearable-7` listens, another device
    pushes someone else's ECG on that stream id. Only the enrolling device's beats count."""
    service, db, templates_key = gateway
    stream = "wearable-7"
    device = _peer(clients, service, keys, "wearable-7", (stream,))
    mallory = _peer(clients, service, keys, "mallory")  # listed, but not the enrolling device
    anonymous = _peer(clients, service, keys, None)     # no key at all: cannot even connect
    rc: list[int] = []
    enrol = threading.Thread(target=lambda: rc.append(main([
        "ecg", "--db", str(db), "--templates-key", str(templates_key), "enroll",
        "--user", "carol", "--stream", stream, "--results", service.bound_publish,
        "--beats", "10", "--timeout", str(TIMEOUT_S), "--keys", str(keys), "--key", "tap",
        "--device-key", str(keys / "wearable-7.key")])))
    attacker_heart = _record(5, 1, 24.0)
    carol_heart = _record(7, 1, 40.0)
    received = 0  # what the service took in on the stream so far (listed senders only)

    def beats_of(n_sent: int) -> list[dict[str, Any]]:
        """The beats published for the last ``n_sent`` messages on the stream."""
        nonlocal received
        before = len(device.received)
        received += n_sent
        return _beats(device.settle(service, {stream: received})[before:], stream)

    enrol.start()
    time.sleep(1.0)  # the enrolment subscribes
    _send(anonymous, stream, attacker_heart, embed=True)
    seq = _send(mallory, stream, attacker_heart, embed=True)
    attacker_beats = beats_of(seq)
    assert enrol.is_alive() and not rc  # nothing enrolled from the attacker's beats
    half = len(carol_heart) // 2
    beats_of(_send(device, stream, carol_heart[:half], embed=True))
    enrol.join(TIMEOUT_S + 10)
    assert rc == [0]
    time.sleep(0.5)  # workers look at the store every 0.25 s
    # Afterwards the attacker cannot pass as carol, and carol can.
    as_attacker = beats_of(_send(mallory, stream, attacker_heart, seq0=seq, claim="carol") - seq)
    as_carol = beats_of(_send(device, stream, carol_heart[half:], seq0=10_000, claim="carol")
                        - 10_000)
    assert len(attacker_beats) >= 10
    assert {b["peer"] for b in attacker_beats} == {_pub(keys, "mallory")}
    # (The first collection after enrolment also holds the rest of carol's enrolment beats.)
    fused_attacker = [b["fused"] for b in as_attacker
                      if b["fused"] and b.get("claim") and b["peer"] == _pub(keys, "mallory")]
    fused_carol = [b["fused"] for b in as_carol
                   if b["fused"] and b.get("claim") and b["peer"] == _pub(keys, "wearable-7")]
    assert fused_attacker and fused_carol
    assert sum(f["verified"] for f in fused_attacker) <= 0.1 * len(fused_attacker)
    assert sum(f["verified"] for f in fused_carol) >= 0.7 * len(fused_carol)


# ---------------------------------------------------------------------------------------------
# The codec link


@pytest.fixture(scope="module")
def codec() -> Any:
    from engines.codec.codec import load_codec

    with load_codec("wideband", backend="eager") as c:
        yield c


def test_codec_link_takeover_fails(codec: Any, keys: Path, tmp_path: Path) -> None:
    """Issue 10: codec-rx played whichever stream came first. Now it plays the named stream of
    the pinned, authenticated sender; an anonymous sender cannot connect, another listed key
    and another stream are counted and never played."""
    from devices.audio import CODEC_FS, read_audio
    from engines.codec.codec import decode_signal, encode_signal
    from stream.paths.codec.receiver import RxConfig, run_codec_rx

    kbps = 16.0
    t = np.arange(int(1.2 * CODEC_FS)) / CODEC_FS
    voice = (0.3 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 3 * t)).astype(np.float32)
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)  # the attacker's
    c = codec.config
    packets = {name: encode_signal(x, c, codec.encoder, codec.coder(kbps=kbps))
               for name, x in (("voice", voice), ("tone", tone))}
    common = {"fs": float(CODEC_FS), "codec": codec.key, "model": codec.model_id,
              "step": codec.step_for(kbps), "kbps": kbps, "frame": c.frame, "hop": c.hop}

    def frames(stream: str, seq: int, packet: bytes, **extra: Any) -> list[bytes]:
        return encode(data_message("codec", stream, seq, np.frombuffer(packet, np.uint8),
                                   t_ns=time.time_ns(), **common, **extra))

    port = free_port()
    out = tmp_path / "out.wav"
    ready = threading.Event()
    rc: list[int] = []
    cfg = RxConfig(bind=f"tcp://127.0.0.1:{port}", output=str(out), stream="link",
                   security=ServerSecurity.from_folder(keys),
                   sender=read_public_key(keys / "wearable-7.key"), until_end=True,
                   seconds=60.0, report=tmp_path / "rx.json",
                   jitter_ms=2000.0)  # deeper than the clip: no frame can be late on a busy box
    receiver = threading.Thread(target=lambda: rc.append(run_codec_rx(
        cfg, codec=codec, ready=lambda _: ready.set())))
    receiver.start()
    assert ready.wait(TIMEOUT_S)
    ctxs = {"sender": ClientSecurity.from_folder(keys, "wearable-7").context(),
            "mallory": ClientSecurity.from_folder(keys, "mallory").context(),
            "anonymous": zmq.Context()}
    socks = {}
    for name, ctx in ctxs.items():
        sock = ctx.socket(zmq.PUSH)
        sock.linger = 1000
        sock.connect(f"tcp://127.0.0.1:{port}")
        socks[name] = sock
    try:
        time.sleep(0.5)
        # The attackers start first, on the same stream id and on another, as in the issue.
        for k, packet in enumerate(packets["tone"]):
            for name in ("anonymous", "mallory"):
                try:
                    socks[name].send_multipart(frames("link", k, packet), zmq.NOBLOCK)
                    socks[name].send_multipart(frames("other", k, packet), zmq.NOBLOCK)
                except zmq.Again:
                    pass
        for k, packet in enumerate(packets["voice"]):  # the real sender
            socks["sender"].send_multipart(frames("link", k, packet))
        socks["sender"].send_multipart(frames("link", len(packets["voice"]), b"", end=True))
        receiver.join(TIMEOUT_S)
    finally:
        for name, sock in socks.items():
            sock.close(linger=0)
            term_context(ctxs[name])
    assert rc == [0]
    import json

    report = json.loads((tmp_path / "rx.json").read_text())
    assert report["played"] == len(packets["voice"]), report
    errors = report["errors"]
    assert errors.get("unauthenticated", 0) >= 2 * len(packets["tone"]), errors  # mallory
    assert set(errors) <= {"unauthenticated", "wrong_stream"}, errors
    played = read_audio(out)
    offline = decode_signal(packets["voice"], voice.size, c, codec.decoder,
                            codec.coder(kbps=kbps))
    np.testing.assert_allclose(played[:voice.size], np.clip(offline, -1, 1), atol=2e-4)
