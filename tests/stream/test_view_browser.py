"""``sigstream view`` in a real browser (Debian's headless chromium, driven by Selenium through
its chromedriver) against real services fed by real sources: every panel draws live data (the
tests read the canvases' pixels), a stream added at run time appears, a stopped one turns
stale, an error shows its reason. Each view's screenshot is saved in ``build/screenshots/``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq
from service_client import REPO, TIMEOUT_S, CliService, free_port, start_logged, term_context
from volume_files import slice_hu

from stream.wire import data_message, encode

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
           "chromium-driver), as .ci/run installs them")
SCREENSHOTS = REPO / "build" / "screenshots"
SPEECH = Path("/usr/share/sounds/alsa/Front_Center.wav")

# Pixels of a canvas within 60 of a colour in each channel (the page's series colours, blended
# where they are drawn over a shading).
_COLOURED = """
const [canvas, r, g, b] = arguments;
if (!canvas) return 0;
const d = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
let n = 0;
for (let i = 0; i < d.length; i += 4)
  if (d[i + 3] > 0 && Math.abs(d[i] - r) < 60 && Math.abs(d[i + 1] - g) < 60 &&
      Math.abs(d[i + 2] - b) < 60) n++;
return n;
"""
_GREYS = """
const d = arguments[0].getContext("2d").getImageData(0, 0, arguments[0].width,
                                                      arguments[0].height).data;
const seen = new Set();
for (let i = 0; i < d.length; i += 4) seen.add(d[i]);
return seen.size;
"""
BLUE, YELLOW, GREEN = (21, 101, 192), (255, 202, 40), (46, 125, 50)


class Page:
    """The browser on one view; :meth:`until` polls a JavaScript expression."""

    def __init__(self, driver: Any, url: str) -> None:
        self.driver = driver
        driver.get(url)

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def until(self, script: str, what: str, timeout_s: float = TIMEOUT_S) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.js(script)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"the page never showed {what}; "
                                     f"errors {self.js('return sigview.errors')}")
            time.sleep(0.2)

    def coloured(self, selector: str, colour: tuple[int, int, int]) -> int:
        canvas = self.driver.find_element("css selector", selector)
        return int(self.js(_COLOURED, canvas, *colour))

    def screenshot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(SCREENSHOTS / f"view-{name}.png"))

    def assert_no_errors(self) -> None:
        assert self.js("return sigview.errors") == []


@pytest.fixture(scope="module")
def browser() -> Iterator[Callable[[str], Page]]:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service as DriverService

    options = Options()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1600,1000", "--disable-gpu"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=DriverService(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield lambda url: Page(driver, url)
    finally:
        driver.quit()


class Processes:
    """Child processes of one test (sources, views, link ends), killed at its end."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, *args: str, ready: str | None = None) -> tuple[subprocess.Popen[str], str]:
        """``sigstream ARGS``; with ``ready``, wait for a log line holding it and return it."""
        proc, line = start_logged([sys.executable, "-m", "stream.cli", *args], ready, cwd=REPO)
        self.procs.append(proc)
        return proc, line

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def processes() -> Iterator[Processes]:
    procs = Processes()
    yield procs
    procs.close()


def _url(line: str) -> str:
    return line.split("view on ", 1)[1].split()[0]


def test_spectral_overview_and_panel(browser: Callable[[str], Page],
                                     processes: Processes) -> None:
    """``run spectral --view-port``: the view beside the service (the shipped model: peaks to
    mark), fed by two simulated spectrometers; one more comes and goes, and a bad spectrum is
    answered."""
    publish = f"tcp://127.0.0.1:{free_port()}"
    service = CliService(None, "--publish", publish, "--view-port", "0",
                         "--metrics-port", str(free_port()), "--deadline-ms", "60000")
    try:
        ingest, _ = service.ready()
        url = _url(next(line for line in service.lines if "view on" in line))
        processes.start("source", "spectral-sim", "--connect", ingest, "--rate", "10",
                        "--streams", "2", "--stream", "inst", "--length", "1024")
        page = browser(f"{url}#stream=inst-1")
        page.until("return sigview.drawn.trace > 2 && sigview.last.panel.data.curve",
                   "the spectrum of inst-1")
        page.until("return sigview.last.health && sigview.last.health.ready", "ready health")
        assert page.coloured("#trace-chart canvas", BLUE) > 300  # the spectrum's curve
        assert page.coloured("#waterfall", YELLOW) > 10  # peak positions over time
        page.until("return sigview.last.latency.t.length >= 4", "4 s of latency history")
        assert page.coloured("#latency canvas", BLUE) > 5  # p50 over time (4 of 120 s drawn)
        rows = page.js("return [...document.querySelectorAll('#streams tbody tr')]"
                       ".map(r => r.dataset.stream)")
        assert rows == ["inst-1", "inst-2"]
        _hover_a_peak(page)
        page.screenshot("spectral")

        # A stream added at run time appears; when it stops it is shown as stale.
        late, _ = processes.start("source", "spectral-sim", "--connect", ingest, "--rate",
                                  "10", "--stream", "late", "--length", "1024")
        page.until("return document.querySelector('#streams tr[data-stream=\"late\"]')",
                   "the stream added at run time")
        late.terminate()
        late.wait(10)
        page.until("return document.querySelector('#streams tr[data-stream=\"late\"]')"
                   ".classList.contains('stale')", "the stopped stream as stale")

        # A bad spectrum is answered with an error; the page shows it with its reason.
        ctx: zmq.Context[Any] = zmq.Context()
        push = ctx.socket(zmq.PUSH)
        push.linger = 0
        push.connect(ingest)
        bad = np.full(512, np.nan, np.float32)
        push.send_multipart(encode(data_message("spectrum", "bad-1", 0, bad)))
        try:
            reason = page.until(
                "const r = document.querySelector('#streams tr[data-stream=\"bad-1\"]');"
                "return r && r.cells[8].textContent", "the error's reason")
        finally:
            push.close(0)
            term_context(ctx)
        assert "NaN" in reason or "finite" in reason, reason
        page.assert_no_errors()
    finally:
        service.close()


def _hover_a_peak(page: Page) -> None:
    """Move the mouse onto a marked peak: its figures show."""
    from selenium.webdriver.common.action_chains import ActionChains

    over = page.driver.find_element("css selector", "#trace-chart .u-over")
    x, y = page.js("""
        const u = charts.trace, m = sigview.markers[0], r = u.over.getBoundingClientRect();
        return [u.valToPos(m.x, "x") - r.width / 2, u.valToPos(m.y, "y") - r.height / 2];""")
    ActionChains(page.driver).move_to_element_with_offset(over, int(x), int(y)).perform()
    text = page.until("const t = document.getElementById('peak-info');"
                      "return !t.hidden && t.textContent", "a peak's figures on hover")
    assert "peak at" in text and "FWHM" in text


def test_ecg_strip_decisions_and_gradcam(browser: Callable[[str], Page], tmp_path: Path,
                                         processes: Processes) -> None:
    """``sigstream view`` on its own, on an ECG gateway with one enrolled user: the strip of
    the wearable the page chose, each beat's decision, and its Grad-CAM (the wearable does not
    ask for one: the service explains the beats of a stream a viewer watches)."""
    from stream.cli import main

    db = tmp_path / "users.sqlite"
    assert main(["ecg", "--db", str(db), "enroll", "--user", "alice", "--file",
                 str(_ecg_csv(tmp_path)), "--fs", "250"]) == 0
    mirror = f"tcp://127.0.0.1:{free_port()}"
    publish = f"tcp://127.0.0.1:{free_port()}"
    service = CliService(None, "--templates", str(db), "--publish", publish, "--mirror",
                         mirror, path="ecg")
    try:
        ingest, _ = service.ready()
        _, line = processes.start("view", "--connect", publish, "--mirror", mirror,
                                  "--port", "0", ready="view on")
        processes.start("source", "ecg-sim", "--connect", ingest, "--stream", "w-alice",
                        "--subject", "0", "--session", "2")
        processes.start("source", "ecg-sim", "--connect", ingest, "--stream", "w-other",
                        "--subject", "7")
        page = browser(f"{_url(line)}#stream=w-alice")
        page.until("return sigview.last && sigview.last.panel && "
                   "sigview.last.panel.events.filter(e => e.class !== 'status').length >= 6",
                   "six beats of w-alice")
        page.until("return sigview.drawn.gradcam > 0", "a Grad-CAM heatmap")
        assert page.coloured("#strip-chart canvas", BLUE) > 300  # the lead, in mV
        beats = page.js("return [...document.querySelectorAll('#beats tbody tr')]"
                        ".map(r => r.className)")
        assert beats and set(beats) <= {"accept", "reject", "uncertain", "status"}
        assert page.js("return document.getElementById('ecg-status').textContent"
                       ).startswith("heart rate")
        assert page.js(_GREYS, page.driver.find_element("css selector", "#gradcam")) > 10
        page.screenshot("ecg")
        page.assert_no_errors()
    finally:
        service.close()


def _ecg_csv(tmp: Path) -> Path:
    from devices import cohort_subject, simulate_record

    record = simulate_record(cohort_subject(0), 0, fs_hz=250.0, duration_s=40.0)
    path = tmp / "alice.csv"
    np.savetxt(path, record.signal, fmt="%.5f", header="ecg", comments="")
    return path


def test_ct_slices_before_and_after(browser: Callable[[str], Page], tmp_path: Path) -> None:
    """Live CT slices (untrained weights: the view, not the model, is under test) with
    window/level."""
    import torch

    from engines.ct.specs import CT_SPECS

    weights = tmp_path / "red_cnn.pt"
    torch.manual_seed(0)
    torch.save(CT_SPECS["red_cnn"].build().state_dict(), weights)
    publish = f"tcp://127.0.0.1:{free_port()}"
    service = CliService(weights, "--model", "red_cnn", "--tile-px", "64", "--publish",
                         publish, "--view-port", "0", "--deadline-ms", "60000", path="ct")
    ctx: zmq.Context[Any] = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.linger = 0
    try:
        ingest, _ = service.ready()
        url = _url(next(line for line in service.lines if "view on" in line))
        page = browser(f"{url}#stream=series-1")
        push.connect(ingest)
        z, deadline = 0, time.monotonic() + TIMEOUT_S
        while not page.js("return sigview.drawn.slices > 1 && "
                          "!!sigview.last.panel.data.before"):
            assert time.monotonic() < deadline, page.js("return sigview.errors")
            stored = (slice_hu(z % 8, (64, 64)) + 1024).astype(np.int16)  # one tile
            push.send_multipart(encode(data_message("ct-slice", "series-1", z, stored,
                                                    slope=1.0, intercept=-1024.0)))
            z += 1
            time.sleep(0.3)
        for canvas in ("#before", "#after"):
            assert page.js(_GREYS, page.driver.find_element("css selector", canvas)) > 2
        assert page.js("return document.getElementById('slice-unit').textContent") == "HU"
        page.screenshot("ct")
        page.assert_no_errors()
    finally:
        push.close(0)
        term_context(ctx)
        service.close()


@pytest.mark.skipif(not SPEECH.is_file(), reason=f"needs alsa-utils' {SPEECH}")
def test_codec_link_meters(browser: Callable[[str], Page], tmp_path: Path,
                           processes: Processes) -> None:
    """Both ends of a codec link, drawn from their /metrics: levels, frames over time and
    capture-to-playout latency."""
    from devices.audio import read_audio, write_audio

    wav_in = tmp_path / "in.wav"
    # About 20 s of speech: on a loaded machine the view needs a few of its 1 s reads of both
    # ends while the link still carries speech (the test ends as soon as it has them).
    write_audio(wav_in, np.tile(read_audio(SPEECH), 13))
    port, rx_metrics, tx_metrics = free_port(), free_port(), free_port()
    processes.start("run", "codec-rx", "--bind", f"tcp://127.0.0.1:{port}", "--output",
                    str(tmp_path / "out.wav"), "--backend", "eager", "--jitter-ms", "1500",
                    "--metrics-port", str(rx_metrics), "--seconds", "60", ready="listening on")
    _, line = processes.start(
        "view", "--connect", f"tcp://127.0.0.1:{free_port()}", "--port", "0",
        "--meters", f"http://127.0.0.1:{tx_metrics}/metrics",
        "--meters", f"http://127.0.0.1:{rx_metrics}/metrics", ready="view on")
    page = browser(_url(line))
    processes.start("run", "codec-tx", "--input", str(wav_in), "--connect",
                    f"tcp://127.0.0.1:{port}", "--backend", "eager",
                    "--metrics-port", str(tx_metrics))
    page.until("return sigview.last && sigview.last.meters.length === 2 && "
               "sigview.last.meters.every(m => m.level > -60 && m.history.t.length > 2)",
               "both ends' levels and history")
    page.until("const rx = sigview.last.meters.find(m => m.role === 'rx');"
               "return rx && rx.latency_ms && rx.counters.played > 0", "frames played")
    for meter in page.driver.find_elements("css selector", ".meter canvas"):
        assert int(page.js(_COLOURED, meter, *GREEN)) > 20  # played / sent per second
    page.screenshot("codec")
    page.assert_no_errors()
