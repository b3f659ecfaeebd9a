"""``sigstream view`` without a browser: the service's input mirror, what the view keeps and
draws (:class:`stream.view.state.ViewState`), and its server facing hostile and stalled pages.
The page itself is tested in a real browser in ``test_view_browser.py``."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import zmq
from service_client import TIMEOUT_S, local_service_config

from bench.view import stalled_page
from stream.paths import PathSpec, ViewSpec, path_specs
from stream.service import Service
from stream.view.panels import envelope, histogram_quantiles
from stream.view.server import ViewConfig, ViewServer
from stream.view.state import STALE_S, STRIP_S, ViewState
from stream.wire import decode, encode, error_message, result_message


def boom(*args: Any) -> Any:
    """A digest that fails on everything (a path's bug must not take the view down)."""
    raise RuntimeError("boom")


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _result(path: str, stream: str, seq: int, body: dict[str, Any], t: float) -> tuple[
        dict[str, Any], dict[str, Any]]:
    return {"kind": f"result.{path}", "stream": stream, "seq": seq, "t_ns": int(t * 1e9)}, body


# -- the mirror -------------------------------------------------------------------------------


def test_the_mirror_sends_the_inputs_of_subscribed_streams_only(
        weights: Path, clients: Callable[..., Any], sockets: Callable[..., zmq.Socket[Any]]
) -> None:
    config = local_service_config(weights, mirror="tcp://127.0.0.1:*", deadline_ms=60_000)
    with Service(config) as service:
        sub = sockets(zmq.SUB, rcvhwm=0)
        sub.setsockopt_string(zmq.SUBSCRIBE, "spectrum/inst-a")
        sub.connect(service.stages["ingest"]["mirror"])
        client = clients(service.bound_ingest, service.bound_publish)
        spectra = np.random.default_rng(0).random((64, 256)).astype(np.float32)
        # The subscription reaches ingest at some point: send inst-a until a copy comes back.
        seq, deadline = 0, time.monotonic() + TIMEOUT_S
        while not sub.poll(100):
            assert time.monotonic() < deadline, "the mirror never sent anything"
            client.send("inst-a", seq, spectra[seq % 64])
            seq += 1
        first = decode(sub.recv_multipart(), topic=True).seq
        assert first is not None
        for i in range(20):
            client.send("inst-a", seq + i, spectra[(seq + i) % 64])
            client.send("inst-b", i, spectra[i])
        client.settle(service, {"inst-a": seq + 20, "inst-b": 20})
        mirrored = {}
        while sub.poll(500):
            msg = decode(sub.recv_multipart(), topic=True)
            assert msg.stream == "inst-a" and msg.kind == "spectrum"
            assert msg.seq not in mirrored, "a copy was sent twice"
            mirrored[msg.seq] = msg.payload.copy()
        summary = service.summary()
    # Every input from the first copy on was mirrored, unchanged; inst-b never was; and the
    # mirror took nothing from the service: every message was answered.
    assert set(mirrored) == set(range(first + 1, seq + 20))
    for n, values in mirrored.items():
        np.testing.assert_array_equal(values, spectra[n % 64])
    assert summary["inst-a"].delivered == seq + 20 and summary["inst-b"].delivered == 20


def test_with_keys_the_mirror_sends_only_to_the_keys_that_may_send(
        weights: Path, tmp_path: Path, clients: Callable[..., Any]) -> None:
    from stream.security import ClientSecurity, ServerSecurity, generate_keys

    for name in ("server", "sender", "stranger"):
        generate_keys(tmp_path, name)
    (tmp_path / "allowed").mkdir()
    (tmp_path / "allowed" / "sender.key").write_bytes((tmp_path / "sender.key").read_bytes())
    config = local_service_config(weights, mirror="tcp://127.0.0.1:*", deadline_ms=60_000,
                                  security=ServerSecurity.from_folder(tmp_path))
    with Service(config) as service:
        subs = {}
        for name in ("sender", "stranger"):
            ctx = ClientSecurity.from_folder(tmp_path, name).context()
            sub = ctx.socket(zmq.SUB)
            sub.linger = 0
            sub.setsockopt_string(zmq.SUBSCRIBE, "spectrum/")
            sub.connect(service.stages["ingest"]["mirror"])
            subs[name] = (ctx, sub)
        client = clients(service.bound_ingest, service.bound_publish,
                         context=ClientSecurity.from_folder(tmp_path, "sender").context())
        seq, deadline = 0, time.monotonic() + TIMEOUT_S
        try:
            while not subs["sender"][1].poll(100):
                assert time.monotonic() < deadline, "the mirror never sent to a listed key"
                client.send("inst-a", seq, np.ones(256, np.float32))
                seq += 1
            client.settle(service, {"inst-a": seq})
            assert not subs["stranger"][1].poll(500), "a key that may not send read inputs"
        finally:
            for ctx, sub in subs.values():
                sub.close(0)
                ctx.term()


def test_run_with_a_view_connects_to_wildcard_binds_through_loopback() -> None:
    from stream.cli_commands import _from_here

    assert _from_here("tcp://*:5556") == "tcp://127.0.0.1:5556"
    assert _from_here("tcp://0.0.0.0:5556") == "tcp://127.0.0.1:5556"
    assert _from_here("tcp://[::]:5556") == "tcp://127.0.0.1:5556"
    assert _from_here("tcp://10.1.2.3:5556") == "tcp://10.1.2.3:5556"
    assert _from_here("ipc:///tmp/x/mirror") == "ipc:///tmp/x/mirror"


def test_mirror_endpoints_are_checked_like_the_others(weights: Path) -> None:
    from stream.errors import ConfigError, SecurityError

    with pytest.raises(SecurityError, match="refusing to bind mirror"):
        local_service_config(weights, mirror="tcp://0.0.0.0:5999")
    with pytest.raises(ConfigError, match="different endpoints"):
        local_service_config(weights, ingest="tcp://127.0.0.1:5998",
                             mirror="tcp://127.0.0.1:5998")


# -- what the view keeps ----------------------------------------------------------------------


def test_overview_counts_results_errors_and_drops_per_stream_and_marks_stale_ones() -> None:
    clock = Clock()
    state = ViewState(clock=clock)
    for i in range(50):
        clock.now += 0.1
        state.result(*_result("spectral", "inst-1", i, {"roi": [], "peaks": []},
                              clock.now - 0.004))
    for seq, code, reason in ((50, "bad_dtype", "dtype 'int8' is not served"),
                              (51, "dropped", "the door was full")):
        error = error_message(code, reason, stream="inst-1", seq=seq)
        state.result(error.header, error.payload)
    row = state.snapshot()["streams"][0]
    assert row["stream"] == "inst-1" and row["path"] == "spectral" and row["results"] == 50
    assert row["rate"] == pytest.approx(10, rel=0.05)
    assert row["p50_ms"] == pytest.approx(4, abs=0.01)
    assert row["errors"] == {"bad_dtype": 1} and row["drops"] == {"dropped": 1}
    assert row["last_error"].startswith("dropped: the door was full")
    assert not row["stale"]
    clock.now += STALE_S + 0.1
    assert state.snapshot()["streams"][0]["stale"]
    latency = state.snapshot()["latency"]
    assert sum(latency["rate"]) == 50 and all(p is not None for p in latency["p99_ms"])


def test_the_overview_from_the_services_counts() -> None:
    # Two reads of /streams a second apart: the rate, latency and codes between them; a
    # result then only draws, an error only gives its reason; a hostile document is counted.
    clock = Clock()
    state = ViewState(clock=clock)
    bounds = [0.001, 0.01, 0.1]

    def doc(delivered: int, latency: list[int], errors: dict[str, Any]) -> dict[str, Any]:
        return {"path": "spectral", "latency_bounds_s": bounds, "streams": {
            "inst-1": {"delivered": delivered, "errors": errors, "dropped": {"expired": 2},
                       "latency": latency}}}

    state.counted(doc(100, [0, 100, 0, 0], {}))  # the baseline: history, not this second
    clock.now += 1.0
    state.counted(doc(150, [0, 140, 10, 0], {"bad_dtype": 1, "x" * 99: 2}))
    row = state.snapshot()["streams"][0]
    assert row["results"] == 150 and row["path"] == "spectral"
    assert row["rate"] == pytest.approx(50, rel=0.05)  # 50 results in the second between
    assert 1.0 <= row["p50_ms"] <= 10.0 and 10.0 <= row["p99_ms"] <= 100.0
    assert row["errors"] == {"bad_dtype": 1, "x" * 64: 2} and row["drops"] == {"expired": 2}
    state.result(*_result("spectral", "inst-1", 151, {}, clock.now))
    error = error_message("bad_dtype", "dtype 'int8' is not served", stream="inst-1", seq=152)
    state.result(error.header, error.payload)
    row = state.snapshot()["streams"][0]
    assert row["results"] == 150 and row["errors"]["bad_dtype"] == 1
    assert row["last_error"] == "bad_dtype: dtype 'int8' is not served"
    for hostile in ({"streams": [1]}, {"streams": {}, "latency_bounds_s": ["a"]}):
        state.counted(hostile)
    state.counted({"latency_bounds_s": bounds, "streams": {"odd": {"delivered": "many"}}})
    assert state.counts["invalid"] == 2 and "odd" not in {r["stream"] for r in
                                                          state.snapshot()["streams"]}


def test_streams_beyond_the_bound_are_counted_together() -> None:
    state = ViewState(max_streams=2)
    for name in ("a", "b", "c", "d"):
        state.result(*_result("spectral", name, 0, {}, time.time()))
    rows = {r["stream"]: r["results"] for r in state.snapshot()["streams"]}
    assert rows == {"a": 1, "b": 1, "*": 2}
    for i in range(100):  # a publisher inventing error codes
        error = error_message(f"code-{i}" + "x" * 100, "?", stream="a", seq=i)
        state.result(error.header, error.payload)
    (row,) = [r for r in state.snapshot()["streams"] if r["stream"] == "a"]
    errors = row["errors"]
    assert len(errors) == 33 and errors["other"] == 68 and max(map(len, errors)) == 64


def test_a_trace_panel_draws_the_spectrum_its_regions_and_peaks() -> None:
    clock = Clock()
    state = ViewState(clock=clock)
    spectrum = np.zeros(4096, np.float32)
    spectrum[1000] = 5.0
    state.result(*_result("spectral", "inst-1", 0, {}, clock.now))
    assert state.choose(["inst-1"]) == {"spectrum/inst-1"}
    state.mirrored({"kind": "spectrum", "stream": "inst-1", "seq": 1}, spectrum)
    peak = {"index": 1000.2, "height": 5.0, "area": 9.0, "width": 2.0, "start": 998,
            "end": 1003, "overlaps": False}
    state.result(*_result("spectral", "inst-1", 1, {"roi": [[990, 1010]], "peaks": [peak]},
                          clock.now))
    panel = state.snapshot("inst-1")["panel"]
    data = panel["data"]
    assert panel["panel"] == "trace" and data["length"] == 4096
    assert len(data["curve"]["y"]) <= 2048 and max(data["curve"]["y"]) == 5.0  # extremes kept
    assert data["spans"] == [[990.0, 1010.0]]
    assert data["markers"][0]["x"] == 1000.2 and data["markers"][0]["y"] == 5.0
    assert panel["waterfall"][-1][1] == [1000.2]
    # A result read before its mirrored input leaves the drawn spectrum as it is.
    clock.now += 1.0
    state.result(*_result("spectral", "inst-1", 2, {"roi": [], "peaks": []}, clock.now))
    assert state.snapshot("inst-1")["panel"]["data"] == data


def test_hostile_result_bodies_are_drawn_as_far_as_they_make_sense() -> None:
    clock = Clock()
    state = ViewState(clock=clock)
    state.result(*_result("spectral", "s", 0, {}, clock.now))
    state.result(*_result("ecg", "e", 0, {"type": "beat"}, clock.now))
    state.choose(["s", "e"])
    for body in ({"roi": "x", "peaks": 7}, {"roi": [[1, "a"], [2], None, [3, 4]],
                                             "peaks": [None, {"index": "1"}, {"index": 2.5}]},
                 {"peaks": [{"index": float("nan")}]}):
        clock.now += 1.0
        state.result(*_result("spectral", "s", 1, body, clock.now))
        data = state.snapshot("s")["panel"]["data"]
        assert all(isinstance(m["x"], float) for m in data["markers"])
    assert data["markers"] == [] and len(state.snapshot("s")["panel"]["waterfall"]) == 3
    for body in ({"type": "beat", "r_t_ns": "soon"},
                 {"type": "beat", "r_t_ns": 5, "gradcam": {"shape": [2, 2], "heatmap": b"x"}},
                 {"type": "status", "status": ["x"], "t_start_ns": None}):
        state.result(*_result("ecg", "e", 1, body, clock.now))
    events = state.snapshot("e")["panel"]["events"]
    assert [e["class"] for e in events] == ["status"]  # the beat at 5 ns is long gone
    assert state.counts["undrawable"] == 0  # nothing raised: each field checked


def test_a_path_whose_digest_fails_is_counted_not_fatal() -> None:
    spec = PathSpec(name="broken", summary="", view=ViewSpec(panel="trace",
                                                             digest="test_view:boom"))
    state = ViewState(specs=[*path_specs(), spec])
    state.result(*_result("broken", "x", 0, {}, time.time()))
    state.choose(["x"])
    state.result(*_result("broken", "x", 1, {}, time.time()))
    assert state.counts["undrawable"] == 1
    assert state.snapshot("x")["streams"][0]["results"] == 2


def test_a_strip_panel_keeps_the_last_seconds_of_signal_and_events() -> None:
    clock = Clock()
    state = ViewState(clock=clock)
    state.result(*_result("ecg", "w", 0, {"type": "status", "status": "ok"}, clock.now))
    state.choose(["w"])
    fs, chunk = 250.0, 250
    t0 = clock.now - 20.0
    for i in range(20):  # 20 s of 1 s chunks, the last ending now
        header = {"kind": "ecg", "stream": "w", "seq": i, "fs": fs,
                  "t_ns": int((t0 + i) * 1e9), "gain": 200}
        state.mirrored(header, np.full(chunk, 200 * (i + 1), np.int16))
    beat = {"type": "beat", "r_t_ns": int((clock.now - 1.5) * 1e9), "decision": "accept",
            "identity": "alice", "score": 0.9, "hr_bpm": 70.0, "quality": "ok", "beat": 3}
    state.result(*_result("ecg", "w", 19, beat, clock.now))
    panel = state.snapshot("w")["panel"]
    t, y = np.array(panel["strip"]["t"]), np.array(panel["strip"]["y"])
    assert t.min() >= -STRIP_S and t.max() <= 0 and t.max() > -0.01
    assert set(y.tolist()) == set(range(11, 21))  # mV: counts / gain, the last 10 s only
    (event,) = [e for e in panel["events"] if e["class"] == "accept"]
    assert event["identity"] == "alice" and event["t"] == pytest.approx(-1.5)


def test_a_strip_holds_a_bounded_signal_whatever_the_senders_clock() -> None:
    state = ViewState()
    state.result(*_result("ecg", "w", 0, {"type": "status", "status": "ok"}, time.time()))
    state.choose(["w"])
    future_ns = int((time.time() + 3600) * 1e9)  # never ages out of the last 10 s
    for i in range(200):
        state.mirrored({"kind": "ecg", "stream": "w", "seq": i, "fs": 250.0,
                        "t_ns": future_ns + i * 1_000_000_000}, np.zeros(4000, np.float32))
    strip = state.snapshot("w")["panel"]["strip"]
    assert len(strip["t"]) <= 2048 and min(strip["t"]) > 3000  # drawn, as it was stamped
    assert state.counts["inputs"] == 200


def test_snapshots_are_plain_json_whatever_readyz_said() -> None:
    state = ViewState()
    detail = json.loads('{"state": "running", "stages": {"ingest": "ready"}, "queues": '
                        '{"ingest": {"depth": NaN, "capacity": Infinity}, "odd": 3}}')
    state.readiness({"ready": True, "status": 200, "detail": detail})
    snapshot = json.loads(state.snapshot_json())
    assert snapshot["queues"] == {"ingest": {"depth": None, "capacity": None}}
    assert snapshot["health"]["detail"] == {"state": "running", "stages": {"ingest": "ready"}}


def test_a_slices_panel_shows_the_slice_before_and_after() -> None:
    state = ViewState()
    state.result(*_result("ct", "series", 0, {}, time.time()))
    assert state.choose(["series"]) == {"ct-slice/series"}
    stored = np.arange(600 * 500, dtype=np.int16).reshape(600, 500)
    state.mirrored({"kind": "ct-slice", "stream": "series", "seq": 1, "slope": 1.0,
                    "intercept": -1024.0}, stored)
    body = {"dtype": "int16", "shape": [600, 500], "pixels": (stored // 2).tobytes(),
            "slope": 2.0, "intercept": -1024.0}
    state.result(*_result("ct", "series", 1, body, time.time()))
    data = state.snapshot("series")["panel"]["data"]
    for key in ("before", "after"):
        image = data[key]
        assert max(image["shape"]) <= 256
        pixels = np.frombuffer(base64.b64decode(image["data"]), "<f4").reshape(image["shape"])
        assert pixels[0, 0] == -1024 and pixels.max() == pytest.approx(image["max"])


def test_histogram_quantiles_and_envelopes() -> None:
    buckets = [("x_bucket", {"le": le}, n) for le, n in
               (("0.01", 50.0), ("0.1", 99.0), ("1.0", 100.0), ("+Inf", 100.0))]
    p50, p99 = histogram_quantiles(buckets, (0.5, 0.99))  # type: ignore[misc]
    assert p50 == pytest.approx(0.01) and p99 == pytest.approx(0.1)
    assert histogram_quantiles([("x_bucket", {"le": "+Inf"}, 0.0)], (0.5,)) is None
    y = np.sin(np.linspace(0, 60, 100_000))
    curve = envelope(y, 1000)
    assert len(curve["y"]) == 1000 and max(curve["y"]) == y.max() and min(curve["y"]) == y.min()


# -- the server -------------------------------------------------------------------------------


def test_a_stalled_or_hostile_page_costs_the_others_nothing(
        sockets: Callable[..., zmq.Socket[Any]]) -> None:
    pub = sockets(zmq.PUB)
    port = pub.bind_to_random_port("tcp://127.0.0.1")

    async def run() -> tuple[int, dict[str, Any], dict[str, int]]:
        server = ViewServer(ViewConfig(connect=f"tcp://127.0.0.1:{port}", port=0,
                                       interval_s=0.02))
        url = await server.start()
        stalled = stalled_page(url)
        received = 0
        try:
            async with aiohttp.ClientSession() as http:
                async with http.ws_connect(f"{url}ws") as page:
                    for bad in ("not json", json.dumps({"choose": 12}), json.dumps([1, 2])):
                        await page.send_str(bad)
                    for bad_choice in ("x" * 300, None):
                        await page.send_str(json.dumps({"choose": bad_choice}))
                    deadline = time.monotonic() + TIMEOUT_S
                    while (server.state.counts["skipped_updates"] < 20 or received < 50):
                        assert time.monotonic() < deadline, dict(server.state.counts)
                        for i in range(300):  # 300 streams: each update is ~60 kB
                            answers = {"stream": f"s{i:03d}", "seq": received,
                                       "t_ns": time.time_ns()}
                            pub.send_multipart(encode(result_message(
                                "spectral", answers, {"roi": []}), topic=True))
                        message = await page.receive(timeout=10)
                        assert message.type == aiohttp.WSMsgType.TEXT
                        received += 1
                    snapshot = json.loads(message.data)
            counts = dict(server.state.counts)
        finally:
            stalled.close()
            await server.stop()
        return received, snapshot, counts

    received, snapshot, counts = asyncio.run(run())
    assert counts["bad_requests"] == 5  # not JSON, a list, and three streams that are none
    assert counts["skipped_updates"] >= 20  # the stalled page's, each counted
    assert received >= 50 and counts["results"] > 0
    assert len(snapshot["streams"]) == 200 and snapshot["streams_more"] == 100


def test_with_the_services_counts_the_view_reads_only_what_it_draws(
        weights: Path, clients: Callable[..., Any]) -> None:
    # With the service's metrics URL the overview comes from its own counts (/streams, read
    # every scrape): the view takes no result of a stream it does not draw, and still shows
    # that stream's rate, latency and errors.
    config = local_service_config(weights, metrics_port=0, mirror="tcp://127.0.0.1:*",
                                  deadline_ms=60_000)
    spectra = np.random.default_rng(0).random((64, 256)).astype(np.float32)

    async def run(service: Service) -> tuple[dict[str, Any], dict[str, Any], int]:
        server = ViewServer(ViewConfig(
            connect=service.bound_publish, mirror=service.stages["ingest"]["mirror"],
            metrics=f"http://127.0.0.1:{service.metrics_port}", port=0, scrape_s=0.2))
        url = await server.start()
        client = clients(service.bound_ingest, service.bound_publish)
        state = server.state

        async def until(done: Callable[[], bool], what: str) -> None:
            deadline = time.monotonic() + TIMEOUT_S
            while not done():
                assert time.monotonic() < deadline, f"never {what}: {dict(state.counts)}"
                await asyncio.sleep(0.05)

        def rows() -> dict[str, dict[str, Any]]:
            return {r["stream"]: r for r in state.snapshot()["streams"]}

        try:
            await until(lambda: state.service_counts, "the service's counts")
            for seq in range(10):
                for stream in ("inst-a", "inst-b"):
                    client.send(stream, seq, spectra[seq])
            await until(lambda: rows().get("inst-b", {}).get("results") == 10, "inst-b")
            async with aiohttp.ClientSession() as http:  # a page draws inst-a from now on
                async with http.get(f"{url}api/state?stream=inst-a") as response:
                    assert response.status == 200
                for seq in range(10, 60):
                    for stream in ("inst-a", "inst-b"):
                        client.send(stream, seq, spectra[seq % 64])
                    await asyncio.sleep(0.02)
                bad = spectra[0].copy()
                bad[3] = np.nan
                client.send("inst-b", 60, bad)
                await until(lambda: rows()["inst-b"]["results"] == 60
                            and rows()["inst-b"]["errors"], "inst-b's later results")
                async with http.get(f"{url}api/state?stream=inst-a") as response:
                    snapshot = await response.json()
            received = state.counts["results"]
        finally:
            await server.stop()
        return rows(), snapshot, received

    with Service(config) as service:
        rows, snapshot, received = asyncio.run(run(service))
    b = rows["inst-b"]
    assert b["rate"] > 0 and b["p50_ms"] is not None and b["p99_ms"] >= b["p50_ms"]
    assert b["last_error"].startswith(next(iter(b["errors"])))  # its reason, from error/
    assert rows["inst-a"]["results"] == 60
    assert snapshot["panel"]["data"] is not None  # inst-a drawn from its own results
    assert 0 < received <= 50  # inst-a's, once chosen; not one of inst-b's 60
    assert sum(snapshot["latency"]["rate"]) > 0
