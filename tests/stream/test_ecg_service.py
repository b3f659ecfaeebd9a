"""The ECG gateway end to end, as a user runs it: users enrolled with ``sigstream ecg`` into a
real SQLite store, a service (real processes, real sockets, the shipped embedding model on the
CPU-compiled backend) fed with simulated wearables, results read from its PUB socket."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq
from service_client import TIMEOUT_S, Client, wait_until

from devices import cohort_subject, simulate_record
from engines.ecg.specs import ECG_SPECS
from stream.cli import main
from stream.paths.ecg import EcgSettings
from stream.service import Service, ServiceConfig
from stream.wire import Message

pytestmark = pytest.mark.skipif(
    not ECG_SPECS["embedding"].weights_path.exists(), reason="no shipped ECG embedding weights"
)

FS = 250.0
CHUNK = 62  # 248 ms at 250 Hz


def _csv(tmp: Path, subject: int, session: int, seconds: float) -> Path:
    record = simulate_record(cohort_subject(subject), session, fs_hz=FS, duration_s=seconds)
    path = tmp / f"subject{subject}-session{session}.csv"
    np.savetxt(path, record.signal, fmt="%.5f", header="ecg", comments="")
    return path


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, Path, Path]]:
    tmp = tmp_path_factory.mktemp("ecg")
    db = tmp / "users.sqlite"
    for user, subject in (("alice", 0), ("bob", 1)):
        rc = main(["ecg", "--db", str(db), "enroll", "--user", user,
                   "--file", str(_csv(tmp, subject, 0, 40.0)), "--fs", str(FS)])
        assert rc == 0
    service = Service(ServiceConfig(
        path="ecg", ingest="tcp://127.0.0.1:*", publish="tcp://127.0.0.1:*", backend="auto",
        settings=EcgSettings(templates=db), cache_dir=tmp / "cache", max_batch=8,
        queue_depth=256, mirror="tcp://127.0.0.1:*",
        stats_interval_s=0.1, stop_timeout_s=20.0,
    ))
    service.start()
    try:
        yield service, db, tmp
    finally:
        service.stop(timeout_s=20)


def _client(clients: Callable[..., Client], service: Service, streams: tuple[str, ...]
            ) -> Client:
    """A client subscribed to the results and errors of ``streams``."""
    topics = [f"{prefix}/{stream}" for stream in streams for prefix in ("result.ecg", "error")]
    return clients(service.bound_ingest, service.bound_publish, topics=topics)


def _send(client: Client, stream: str, signal: np.ndarray, **kwargs: Any) -> int:
    """``signal`` in chunks of :data:`CHUNK`; returns the next seq."""
    return client.send_signal("ecg", stream, signal, chunk=CHUNK, fs=FS, **kwargs)


def _beats(msgs: list[Message], stream: str) -> list[dict[str, Any]]:
    return [m.payload for m in msgs
            if m.stream == stream and m.kind == "result.ecg" and m.payload["type"] == "beat"]


def test_users_are_listed_and_removed_with_the_cli(gateway, capsys) -> None:  # type: ignore[no-untyped-def]
    _, db, tmp = gateway
    assert main(["ecg", "--db", str(db), "users", "--json"]) == 0
    users = {u["user"]: u for u in json.loads(capsys.readouterr().out)}
    assert set(users) >= {"alice", "bob"} and users["alice"]["n_beats"] >= 20
    assert main(["ecg", "--db", str(db), "enroll", "--user", "temp",
                 "--file", str(_csv(tmp, 9, 0, 30.0)), "--fs", str(FS)]) == 0
    assert main(["ecg", "--db", str(db), "remove", "--user", "temp"]) == 0
    assert main(["ecg", "--db", str(db), "remove", "--user", "temp"]) == 1
    flat = tmp / "flat.csv"
    np.savetxt(flat, np.zeros(5000))
    assert main(["ecg", "--db", str(db), "enroll", "--user", "nobody", "--file", str(flat),
                 "--fs", str(FS)]) == 1  # no good beat: refused, nothing stored
    capsys.readouterr()
    assert main(["ecg", "--db", str(db), "users", "--json"]) == 0
    assert "nobody" not in {u["user"] for u in json.loads(capsys.readouterr().out)}


def test_gateway_recognises_verifies_and_reports_bad_signal(gateway, clients) -> None:  # type: ignore[no-untyped-def]
    service, _, _ = gateway
    streams = ("g-alice", "g-stranger", "g-flat", "g-bad")
    client = _client(clients, service, streams)
    alice = simulate_record(cohort_subject(0), 1, fs_hz=FS, duration_s=24.0).signal
    stranger = simulate_record(cohort_subject(1005), 1, fs_hz=FS, duration_s=24.0).signal
    sent = {"g-alice": _send(client, "g-alice", alice, claim="alice"),
            "g-stranger": _send(client, "g-stranger", stranger, claim="alice"),
            "g-flat": _send(client, "g-flat", np.zeros(2500, np.float32)), "g-bad": 1}
    client.send("g-bad", 0, np.zeros((10, 3), np.float32), kind="ecg", fs=FS)
    msgs = client.settle(service, sent)
    beats = _beats(msgs, "g-alice")
    assert len(beats) >= 15
    fused = [b["fused"] for b in beats if b["fused"] and b["fused"]["beats"] == 5]
    # The claim is verified (1:1); identification (1:N, stricter) never names anyone else.
    assert fused and sum(f["verified"] for f in fused) >= 0.9 * len(fused)
    assert sum(b["verified"] for b in beats) >= 0.7 * len(beats)
    assert all(b["identity"] in ("alice", None) for b in beats + fused)
    r_times = [b["r_t_ns"] for b in beats]
    assert r_times == sorted(r_times)  # one stream, one worker, in order
    impostor = [b["fused"] for b in _beats(msgs, "g-stranger") if b["fused"]]
    assert impostor and sum(f["verified"] for f in impostor) <= 0.1 * len(impostor)
    flat = [m.payload for m in msgs if m.stream == "g-flat"]
    assert flat and all(p["type"] == "status" and p["decision"] == "uncertain" for p in flat)
    assert {p["status"] for p in flat} <= {"flat", "lead_off"}
    errors = [m for m in msgs if m.stream == "g-bad"]
    assert [m.kind for m in errors] == ["error"] and errors[0].payload["code"] == "bad_shape"


def test_live_enrolment_then_recognition_and_explanation(gateway, clients, tmp_path: Path  # type: ignore[no-untyped-def]
                                                          ) -> None:
    service, db, _ = gateway
    carol = simulate_record(cohort_subject(7), 1, fs_hz=FS, duration_s=40.0).signal
    client = _client(clients, service, ("g-carol",))
    rc: list[int] = []
    enrol = threading.Thread(target=lambda: rc.append(main([
        "ecg", "--db", str(db), "enroll", "--user", "carol", "--stream", "g-carol",
        "--results", service.bound_publish, "--beats", "10", "--timeout", str(TIMEOUT_S),
        "--insecure"])))  # no keys here: tests/stream/test_security.py enrols securely
    enrol.start()
    time.sleep(0.5)  # the enrolment subscribes (it needs 10 of the ~25 beats sent)
    half = len(carol) // 2
    seq = _send(client, "g-carol", carol[:half], embed=True)
    enrol.join(TIMEOUT_S + 10)
    assert rc == [0]
    time.sleep(0.5)  # workers look at the store every 0.25 s
    before = len(client.settle(service, {"g-carol": seq}))
    seq = _send(client, "g-carol", carol[half:], seq0=seq, explain=True)
    msgs = client.settle(service, {"g-carol": seq})[before:]
    late = [b for b in _beats(msgs, "g-carol") if b.get("gradcam")]
    assert len(late) >= 10
    assert sum(b["identity"] == "carol" for b in late) >= 0.7 * len(late)
    out = tmp_path / "png"
    shape = late[0]["gradcam"]["shape"]
    assert len(late[0]["gradcam"]["heatmap"]) == shape[0] * shape[1]
    from engines.ecg.gradcam import explanation_png
    from stream.paths.ecg.stages import unpack_explanation

    out.mkdir()
    png = explanation_png(*unpack_explanation(late[0]["gradcam"]))
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


def test_a_stream_a_viewer_watches_has_its_beats_explained(  # type: ignore[no-untyped-def]
        gateway, clients, sockets) -> None:
    # A viewer subscribes to one wearable's inputs on the mirror, as ``sigstream view`` does
    # for the stream a page draws: that wearable's beats come with Grad-CAM heatmaps without
    # asking. A sender that writes ``watched`` itself gets none.
    service, _, _ = gateway
    client = _client(clients, service, ("g-watched", "g-forged"))
    viewer = sockets(zmq.SUB, rcvhwm=0)
    viewer.setsockopt_string(zmq.SUBSCRIBE, "ecg/g-watched")
    viewer.connect(service.stages["ingest"]["mirror"])
    alice = simulate_record(cohort_subject(0), 1, fs_hz=FS, duration_s=24.0).signal
    seq, deadline = 0, time.monotonic() + TIMEOUT_S
    while not viewer.poll(100):  # the subscription reaches ingest at some point
        assert time.monotonic() < deadline, "the mirror never sent anything"
        seq = _send(client, "g-watched", alice[seq * CHUNK:(seq + 1) * CHUNK], seq0=seq,
                    claim="alice")
    for start in range(seq * CHUNK, len(alice), CHUNK):  # 4 x real time: ~5 beats a second
        seq = _send(client, "g-watched", alice[start:start + CHUNK], seq0=seq, claim="alice")
        time.sleep(CHUNK / FS / 4)
    forged = _send(client, "g-forged", alice, claim="alice", watched=True)
    msgs = client.settle(service, {"g-watched": seq, "g-forged": forged})
    # A beat is explained against its verified claim (never against a user it was not matched
    # to), within the workers' budget for viewers: a burst of 8, then 4 a second (a worker
    # that fell behind on a loaded machine meets the paced beats at once, hence no more
    # than the burst is asserted).
    beats = _beats(msgs, "g-watched")
    explained = [b for b in beats if b.get("gradcam")]
    assert len(explained) >= 4, [(b["beat"], b["verified"], "gradcam" in b) for b in beats]
    assert all(b["verified"] for b in explained)
    assert {b["gradcam"]["target"] for b in explained} == {"alice"}
    assert _beats(msgs, "g-forged") and not any(b.get("gradcam")
                                                for b in _beats(msgs, "g-forged"))


def test_offline_explain_writes_pngs(gateway, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, db, tmp = gateway
    out = tmp_path / "explain"
    assert main(["ecg", "--db", str(db), "explain", "--file", str(_csv(tmp, 0, 2, 20.0)),
                 "--fs", str(FS), "--out", str(out), "--beats", "3", "--user", "alice"]) == 0
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 3 and all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)


def test_every_chunk_and_beat_is_accounted_for(gateway) -> None:  # type: ignore[no-untyped-def]
    service, _, _ = gateway
    wait_until(lambda: all(s.unexplained == 0 for s in service.summary().values()),
               "every stream's account closes")
    summary = service.summary()
    assert summary["g-alice"].consumed == summary["g-alice"].received
    assert summary["g-alice"].delivered == summary["g-alice"].emitted > 15
    assert summary["g-bad"].errors == {"bad_shape": 1}
    assert {s.stream: s.unexplained for s in summary.values()} == {
        s.stream: 0 for s in summary.values()}
