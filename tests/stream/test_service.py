"""The service end to end: real processes, real sockets on 127.0.0.1 (random ports).

One service (eager backend, an untrained model's weights in a temp folder: plumbing does not
need trained weights) serves most tests of this module; each test owns its client sockets and
uses its own stream ids. Services with other settings (queue policies, a killed stage) and the
``sigstream run`` subprocess are started by their own tests.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq
from service_client import (
    TIMEOUT_S,
    Client,
    CliService,
    alive,
    children,
    free_port,
    ingest_took,
    local_service_config,
    wait_until,
)

from stream.errors import ConfigError, ServiceError
from stream.service import Service, ServiceConfig
from stream.wire import Message, data_message, encode

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------------
# Fixtures and helpers


def make_config(weights: Path, **overrides: Any) -> ServiceConfig:
    # These tests are about results and accounting, not freshness: a spectrum that waits at
    # the door on a loaded machine gets its result, not `expired` (the path's 50 ms).
    return local_service_config(weights, **{"queue_depth": 256, "stop_timeout_s": 20.0,
                                            "deadline_ms": 60_000, **overrides})


@pytest.fixture(scope="module", params=[0, 2], ids=["stages-in-ingest", "two-shards"])
def service(weights: Path, request: pytest.FixtureRequest) -> Iterator[Service]:
    # Both topologies: per-stream stages inside ingest (the default), and shard processes.
    svc = Service(
        make_config(weights, shards=request.param, metrics_port=0, metrics_addr="127.0.0.1")
    )
    svc.start()
    ipc_dir = svc.ipc_dir
    assert ipc_dir is not None and os.path.isdir(ipc_dir)
    try:
        yield svc
    finally:
        svc.stop(timeout_s=20)
    assert not alive(svc.pids.values())
    assert not os.path.exists(ipc_dir)


def spectrum(seed: int = 0, length: int = 512) -> np.ndarray:
    return np.random.default_rng(seed).random(length).astype(np.float32)


def header(**fields: Any) -> bytes:
    """A v1 spectrum header with ``fields`` replaced (a value of ``...`` deletes the key)."""
    base: dict[str, Any] = {"v": 1, "kind": "spectrum", "stream": "s", "seq": 0,
                            "t_ns": time.time_ns(), "dtype": "float32", "shape": [512]}
    base.update(fields)
    return msgpack.packb({k: v for k, v in base.items() if v is not ...})


@pytest.fixture
def client(service: Service, clients: Callable[..., Client]) -> Client:
    return clients(service.bound_ingest, service.bound_publish)


def answered(client: Client, stream: str, seqs: range) -> Callable[[list[Message]], bool]:
    return lambda _: all(s in client.answers(stream) for s in seqs)


def wait_for_count(service: Service, stream: str, code: str, at_least: int) -> int:
    """The service's error counter for ``stream``/``code``, once it reaches ``at_least``."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        n = service.summary().get(stream)
        count = 0 if n is None else n.errors.get(code, 0)
        if count >= at_least or time.monotonic() > deadline:
            return count
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# Results


def test_one_result_per_seq_for_three_streams(service: Service, client: Client) -> None:
    streams, seqs = ("e2e-a", "e2e-b", "e2e-c"), range(100, 112)
    for seq in seqs:
        for i, stream in enumerate(streams):
            client.send(stream, seq, spectrum(seq * 3 + i))
    client.wait_for(lambda _: all(answered(client, s, seqs)(_) for s in streams))
    # Once the service's account is closed, anything extra (a duplicate) is on its way.
    client.settle(service, {stream: len(seqs) for stream in streams})
    for stream in streams:
        answers = client.answers(stream)
        assert sorted(answers) == list(seqs)
        for seq, msgs in answers.items():
            assert len(msgs) == 1, f"{stream}/{seq} answered {len(msgs)} times"
            msg = msgs[0]
            assert msg.kind == "result.spectral"
            assert msg.topic == f"result.spectral/{stream}"
            assert (msg.stream, msg.seq) == (stream, seq)
            assert set(msg.payload) == {"roi", "peaks"}
            assert isinstance(msg.t_ns, int)
    summary = service.summary()
    for stream in streams:
        s = summary[stream]
        assert (s.received, s.delivered, s.unexplained, s.gaps) == (len(seqs), len(seqs), 0, 0)


def test_any_length_and_integer_spectra(client: Client) -> None:
    client.send("e2e-len", 0, spectrum(1, 1047))
    client.send("e2e-len", 1, (spectrum(2) * 4000).astype(np.int16))
    client.send("e2e-len", 2, spectrum(3, 100).astype(np.float64))
    client.wait_for(answered(client, "e2e-len", range(3)))
    assert all(m[0].kind == "result.spectral" for m in client.answers("e2e-len").values())


def test_metrics_endpoint(service: Service, client: Client) -> None:
    client.send("e2e-metrics", 0, spectrum())
    client.wait_for(answered(client, "e2e-metrics", range(1)))
    deadline = time.monotonic() + TIMEOUT_S
    url = f"http://127.0.0.1:{service.metrics_port}/metrics"
    while True:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        if 'sigstream_latency_seconds_count{stream="e2e-metrics"} 1.0' in text:
            break
        assert time.monotonic() < deadline, text[:2000]
        time.sleep(0.1)
    assert 'sigstream_frames_in_total{stage="ingest",stream="e2e-metrics"} 1.0' in text
    assert 'sigstream_frames_out_total{stage="publisher",stream="e2e-metrics"} 1.0' in text
    assert 'sigstream_stage_up{stage="worker-0"} 1.0' in text
    assert 'sigstream_queue_capacity{stage="ingest"} 256.0' in text


def _probe(url: str) -> tuple[int, dict[str, Any]]:
    """Status and JSON body of a health endpoint (503 is an answer, not an error)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_health_endpoints_follow_the_stages(weights: Path) -> None:
    config = make_config(weights, metrics_port=0, metrics_addr="127.0.0.1")
    with Service(config) as service:
        base = f"http://127.0.0.1:{service.metrics_port}"
        assert _probe(f"{base}/healthz") == (200, {"alive": True})
        status, body = _probe(f"{base}/readyz")
        assert status == 200 and body["ready"] is True and body["state"] == "running"
        assert body["stages"] == {name: "ready" for name in service.pids}
        # The queues a dashboard draws, without a /metrics scrape that grows with the streams
        # (each stage's first report comes within stats_interval_s).
        wait_until(lambda: "ingest" in _probe(f"{base}/readyz")[1]["queues"], "ingest's queue")
        body = _probe(f"{base}/readyz")[1]
        assert body["queues"]["ingest"]["capacity"] == config.queue_depth
        assert set(body["queues"]) <= set(service.pids) and all(
            q["depth"] >= 0 for q in body["queues"].values())
        old = service.pids["worker-0"]
        os.kill(old, signal.SIGKILL)
        wait_until(lambda: _probe(f"{base}/readyz")[0] == 503, "readyz says not ready")
        status, body = _probe(f"{base}/readyz")
        if status == 503:  # unless the worker is already back
            assert body["ready"] is False and body["stages"]["ingest"] == "ready"
            assert body["stages"]["worker-0"] in ("down", "starting"), body
        wait_until(lambda: _probe(f"{base}/readyz")[0] == 200, "the restarted worker is ready")
        assert service.pids["worker-0"] != old
        assert _probe(f"{base}/healthz")[0] == 200
    ready, details = service.readiness()
    assert not ready and details["state"] == "stopped"


def test_json_logs_come_from_every_process(weights: Path) -> None:
    # --log-format json reaches the stage processes: every line of the log is one JSON record.
    run = CliService(weights, "--metrics-port", "0", top=("--log-format", "json"))
    try:
        run.ready(180)
        run.proc.send_signal(signal.SIGTERM)
        assert run.proc.wait(timeout=60) == 0, run.log
        lines = run.finish_log(5).splitlines()
    finally:
        run.close()
    records = [json.loads(line) for line in lines if line.strip()]
    assert all(set(r) >= {"time", "level", "process", "logger", "message"} for r in records)
    processes = {r["process"] for r in records}
    assert {"MainProcess", "sigstream-ingest", "sigstream-worker-0"} <= processes, processes
    assert any(r["message"].startswith("summary total:") for r in records)


# ---------------------------------------------------------------------------------------------
# Bad input: an error for the bad message, a counter, and the good stream keeps its results

SEQ = 5  # the bad message's seq, where the case keeps it readable
HUGE = 10**7


def _payload(n_bytes: int) -> bytes:
    return bytes(n_bytes)


BAD_CASES: dict[str, tuple[Callable[[str], list[bytes]], str, bool, bool]] = {
    # case: (frames for stream id, expected code, stream readable, seq readable)
    "malformed_msgpack": (lambda s: [b"\xc1\x92\xff", _payload(2048)], "bad_msgpack",
                          False, False),
    "header_not_a_map": (lambda s: [msgpack.packb([1, 2]), _payload(2048)], "bad_msgpack",
                         False, False),
    "frame_count": (lambda s: [header(stream=s, seq=SEQ), _payload(2048), b"x"],
                    "frame_count", False, False),
    "missing_field": (lambda s: [header(stream=s, seq=SEQ, dtype=...), _payload(2048)],
                      "missing_field", True, True),
    "missing_seq": (lambda s: [header(stream=s, seq=...), _payload(2048)], "missing_field",
                    True, False),
    "wrong_field": (lambda s: [header(stream=s, seq="five"), _payload(2048)], "bad_field",
                    True, False),
    "wrong_version": (lambda s: [header(stream=s, seq=SEQ, v=2), _payload(2048)], "version",
                      True, True),
    "payload_length": (lambda s: [header(stream=s, seq=SEQ), _payload(2000)],
                       "payload_length", True, True),
    "wrong_dtype": (lambda s: [header(stream=s, seq=SEQ, dtype="complex64"), _payload(4096)],
                    "bad_dtype", True, True),
    "big_endian_dtype": (lambda s: [header(stream=s, seq=SEQ, dtype=">f4"), _payload(2048)],
                         "bad_dtype", True, True),
    "nan": (lambda s: encode(data_message("spectrum", s, SEQ, np.where(
        np.arange(512) == 7, np.nan, 0.5).astype(np.float32))), "input_contract", True, True),
    "inf": (lambda s: encode(data_message("spectrum", s, SEQ, np.where(
        np.arange(512) == 7, np.inf, 0.5).astype(np.float32))), "input_contract", True, True),
    "empty": (lambda s: [header(stream=s, seq=SEQ, shape=[0]), b""], "empty", True, True),
    "huge_spectrum": (lambda s: [header(stream=s, seq=SEQ, shape=[HUGE]), _payload(4 * HUGE)],
                      "too_long", True, True),
    "oversize_message": (lambda s: [header(stream=s, seq=SEQ, dtype="uint8",
                                           shape=[(64 << 20) + 1]), _payload((64 << 20) + 1)],
                         "oversize", True, True),
    "wrong_kind": (lambda s: encode(data_message("ecg", s, SEQ, np.zeros(256, np.int16),
                                                 fs=360.0)), "wrong_kind", True, True),
    "result_sent_to_ingest": (lambda s: [header(stream=s, seq=SEQ, kind="result.spectral",
                                                dtype="msgpack", shape=[]), msgpack.packb({})],
                              "wrong_kind", True, True),
    "two_d": (lambda s: [header(stream=s, seq=SEQ, shape=[2, 256]), _payload(2048)],
              "bad_shape", True, True),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_is_answered_and_counted(service: Service, client: Client, case: str) -> None:
    build, code, stream_known, seq_known = BAD_CASES[case]
    bad_stream, good = f"bad-{case}", f"good-{case}"
    topic_stream = bad_stream if stream_known else "?"
    before = wait_for_count(service, topic_stream, code, 0)

    for seq in range(0, 4):
        client.send(good, seq, spectrum(seq))
    client.send_frames(build(bad_stream))
    for seq in range(4, 8):
        client.send(good, seq, spectrum(seq))

    def error_arrived(msgs: list[Message]) -> bool:
        return any(m.kind == "error" and m.payload["code"] == code and m.stream == topic_stream
                   for m in msgs)

    client.wait_for(lambda msgs: error_arrived(msgs) and answered(client, good, range(8))(msgs))
    errors = [m for m in client.received if m.kind == "error" and m.stream == topic_stream]
    assert len(errors) == 1, [e.payload for e in errors]
    error = errors[0]
    assert error.topic == f"error/{topic_stream}"
    assert error.payload["reason"]
    if seq_known:
        assert error.seq == SEQ and error.payload["seq"] == SEQ
    else:
        assert error.seq is None and "seq" not in error.payload
    # The good stream, interleaved with the bad message, got every result.
    assert all(
        len(msgs) == 1 and msgs[0].kind == "result.spectral"
        for msgs in client.answers(good).values()
    )
    assert wait_for_count(service, topic_stream, code, before + 1) == before + 1


# ---------------------------------------------------------------------------------------------
# Start failures, stage deaths, policies


def test_endpoint_in_use_raises_service_error(weights: Path) -> None:
    ctx = zmq.Context()
    blocker = ctx.socket(zmq.PULL)
    blocker.linger = 0
    port = blocker.bind_to_random_port("tcp://127.0.0.1")
    try:
        service = Service(make_config(weights, ingest=f"tcp://127.0.0.1:{port}"))
        with pytest.raises(ServiceError, match="ingest.*in use"):
            service.start()
        assert not alive(service.pids.values())
        service.close()
        service.close()
    finally:
        blocker.close()
        ctx.term()


def test_bad_config_is_refused_before_any_io(weights: Path) -> None:
    with pytest.raises(ConfigError, match="queue_policy"):
        make_config(weights, queue_policy="drop-newest")
    with pytest.raises(ConfigError, match="ecg path needs its settings"):
        make_config(weights, path="ecg")
    with pytest.raises(ConfigError, match="unknown path 'codec'; the service runs spectral"):
        make_config(weights, path="codec")  # a path with its own runner
    with pytest.raises(ConfigError, match="no model 'embedding'"):
        make_config(weights, model="embedding")
    with pytest.raises(ConfigError, match="settings are a SpectralSettings"):
        make_config(weights, settings={"templates": "x"})
    with pytest.raises(ConfigError, match="endpoint"):
        make_config(weights, ingest="inproc://x")
    with pytest.raises(ConfigError, match="shards"):
        make_config(weights, shards=-1)
    with pytest.raises(ConfigError, match="workers"):
        make_config(weights, workers=0)
    service = Service(make_config(weights))
    with pytest.raises(ServiceError, match="not running"):
        service.bound_ingest  # noqa: B018
    service.close()  # never started: nothing to do, safe


def _maps_torch(pid: int) -> bool:
    with open(f"/proc/{pid}/maps") as maps:
        return "libtorch" in maps.read()


def test_a_warm_start_loads_torch_in_no_stage(weights: Path, tmp_path: Path) -> None:
    # The first start builds the ONNX Runtime engine and gates it against the eager module,
    # which needs torch in the worker; the second loads the cache entry that passed its gate.
    config = make_config(weights, backend="onnxruntime", cache_dir=tmp_path / "engines",
                         workers=1, max_batch=2)
    for start in ("cold", "warm"):
        with Service(config) as service:
            torch_in = {name: _maps_torch(pid) for name, pid in service.pids.items()}
        assert torch_in["worker-0"] is (start == "cold"), (start, torch_in)
        assert not any(loaded for name, loaded in torch_in.items() if name != "worker-0")


@pytest.mark.slow
def test_deaths_beyond_the_restart_budget_stop_the_service(weights: Path) -> None:
    service = Service(make_config(weights, restart_budget=0))
    service.start()
    try:
        os.kill(service.pids["worker-0"], signal.SIGKILL)
        assert service.wait(timeout_s=10), "the supervisor did not notice"
        assert "worker-0" in str(service.failure) and "budget" in str(service.failure)
        deadline = time.monotonic() + 15
        while alive(service.pids.values()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(service.pids.values()), "a half-dead service kept running"
    finally:
        service.stop(timeout_s=5)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("policy", "code"), [("drop-oldest", "dropped"), ("reject", "overloaded"), ("block", None)]
)
def test_queue_policies_explain_every_seq(weights: Path, clients: Callable[..., Client],
                                         policy: str, code: str | None) -> None:
    config = make_config(weights, queue_depth=2, queue_policy=policy, max_batch=1)
    with Service(config) as service:
        client = clients(service.bound_ingest, service.bound_publish)
        n = 150
        for seq in range(n):
            client.send("burst", seq, spectrum(seq))
        client.wait_for(answered(client, "burst", range(n)))
        answers = client.answers("burst")
        assert all(len(msgs) == 1 for msgs in answers.values())
        kinds = [msgs[0].payload.get("code", "result") if msgs[0].kind == "error" else "result"
                 for msgs in answers.values()]
        service.stop()
        s = service.summary()["burst"]
    assert s.received == n and s.unexplained == 0
    if code is None:
        assert kinds.count("result") == n and s.dropped_total == 0
    else:
        assert kinds.count(code) > 0, "a burst of 150 into a queue of 2 must overflow"
        assert set(kinds) <= {"result", code}
        assert s.dropped == {code: kinds.count(code)}
        assert s.delivered == kinds.count("result")


# ---------------------------------------------------------------------------------------------
# `sigstream run` as a real process


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds child processes in /proc")
@pytest.mark.parametrize(
    "how",
    [
        "sigterm",
        # Ctrl-C in a terminal: SIGINT to the whole process group, children included.
        pytest.param("ctrl_c", marks=pytest.mark.slow),
    ],
)
def test_sigterm_drains_and_leaves_no_child(weights: Path, clients: Callable[..., Client],
                                            how: str) -> None:
    metrics_port = free_port()
    run = CliService(weights, "--deadline-ms", "60000", "--metrics-port", str(metrics_port))
    try:
        ingest, publish = run.ready(180)
        client = clients(ingest, publish)
        stages = children(run.proc.pid)
        assert len(stages) >= 4  # ingest, 2 workers, publisher (+ resource tracker)
        n = 30
        for seq in range(n):
            client.send("term", seq, spectrum(seq))
        # Taken in by ingest (not still in this client's queue): SIGTERM must drain them.
        wait_until(ingest_took(f"http://127.0.0.1:{metrics_port}/metrics", {"term": n}),
                   "ingest has taken every message")
        if how == "sigterm":
            run.proc.send_signal(signal.SIGTERM)
        else:
            os.killpg(run.proc.pid, signal.SIGINT)
        assert run.proc.wait(timeout=60) == 0, run.log
        client.wait_for(answered(client, "term", range(n)))
        assert all(m[0].kind == "result.spectral" for m in client.answers("term").values())
        deadline = time.monotonic() + 10
        while alive(stages) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(stages), "child processes outlived sigstream run"
        log = run.finish_log(5)
        assert "summary term: received 30, delivered 30" in log, log
    finally:
        run.close()
