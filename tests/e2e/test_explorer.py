"""The explorer page in a real headless browser (Debian's chromium through Selenium) against a live
server (fake backend) with a collection filled from recordings made here.

The screenshot is written to ``test-artifacts/explorer.png`` (``SONOVEC_TEST_ARTIFACTS`` to move it).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf
from readme import run_as_written, section
from servers import ServerProcess

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

pytestmark = pytest.mark.e2e

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
KEY = "explorer-test-key"
RATE = 24_000
PITCHES = {"low": 110.0, "mid": 440.0, "high": 1760.0}
PER_LABEL = 4
POINTS = "#map .scatterlayer path.point"
ARTIFACTS = Path(os.environ.get("SONOVEC_TEST_ARTIFACTS", Path(__file__).parents[2] / "test-artifacts"))

if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    if os.environ.get("CI"):  # scripts/system-deps.sh installs them: missing there is a failure
        pytest.fail("chromium or chromedriver is missing (make system-deps)", pytrace=False)
    pytest.skip("needs Debian's chromium and chromium-driver (scripts/system-deps.sh)",
                allow_module_level=True)


def note(label: str, seconds: float, seed: int) -> bytes:
    """A WAV of a harmonic note at the label's pitch with a little noise."""
    t = np.arange(round(seconds * RATE)) / RATE
    f = PITCHES[label] * (1 + 0.02 * seed)
    x = sum(np.sin(2 * np.pi * f * h * t) / h for h in (1, 2, 3)) * 0.3
    x = x + 0.01 * np.random.default_rng(seed).standard_normal(len(t))
    buffer = io.BytesIO()
    sf.write(buffer, x.astype(np.float32), RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def wav_seconds(body: bytes) -> float:
    info = sf.info(io.BytesIO(body))
    return float(info.frames / info.samplerate)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("explorer"), api_keys=KEY).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def api(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def notes(api: httpx.Client) -> dict[str, float]:
    """The collection ``notes``: 12 recordings kept as originals, 3 labels, and one item added by
    vector (nothing to play). Returns each recorded item's duration."""
    assert api.post("/v1/collections", json={"name": "notes", "keep_audio": "original"}).status_code == 201
    durations = {}
    for label in PITCHES:
        for i in range(PER_LABEL):
            item_id, seconds = f"{label}-{i}", 0.8 + 0.3 * i
            r = api.post("/v1/collections/notes/items", files={"audio": ("n.wav", note(label, seconds, i))},
                         data={"id": item_id, "labels": label, "metadata": f'{{"take": {i}}}'})
            assert r.status_code == 200, r.text
            durations[item_id] = seconds
    dim = api.get("/v1/collections/notes").json()["space"]["dim"]
    r = api.post("/v1/collections/notes/items", json={"items": [{"id": "by-vector", "vector": [1.0] * dim}]})
    assert r.status_code == 200, r.text
    return durations


@pytest.fixture()
def browser(tmp_path: Path) -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1400,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


def until(condition: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or condition}")


def points(driver: Any) -> list[Any]:
    return list(driver.find_elements(By.CSS_SELECTOR, POINTS))


def open_page(driver: Any, server: ServerProcess, count: int) -> None:
    """Open /explore/notes, give the key when asked, wait for ``count`` SVG points."""
    driver.get(f"{server.url}/explore/notes")
    until(lambda: driver.find_element(By.ID, "keybox").is_displayed(), what="the key prompt")
    driver.find_element(By.ID, "key").send_keys(KEY)
    driver.find_element(By.ID, "key-save").click()
    until(lambda: len(points(driver)) == count, what=f"{count} points")


def point_ids(driver: Any) -> list[str]:
    """The id of each drawn point, in SVG order (plotly keeps customdata per trace)."""
    script = """return document.getElementById('map').data.flatMap(
        (t, i) => t.visible === false ? [] : t.customdata);"""
    return list(driver.execute_script(script))


def click_point(driver: Any, item_id: str) -> None:
    index = point_ids(driver).index(item_id)
    ActionChains(driver).move_to_element(points(driver)[index]).click().perform()


def test_map_click_play_neighbours_filter_upload(
    browser: Any, server: ServerProcess, api: httpx.Client, notes: dict[str, float], tmp_path: Path
) -> None:
    total = len(notes) + 1
    open_page(browser, server, total)
    banner = browser.find_element(By.ID, "banner")
    assert banner.is_displayed() and "Not pretrained" in banner.text
    assert browser.find_elements(By.CSS_SELECTOR, "#map .scattergl") == []  # SVG, not WebGL

    # click a point: its audio plays, its neighbours are the search API's
    click_point(browser, "mid-2")
    until(lambda: browser.execute_script(
        "const p = document.getElementById('player'); return p.dataset.item === 'mid-2' && !p.paused"
        " && p.currentTime > 0;"), what="playback of mid-2")
    source = browser.execute_script("return document.getElementById('player').dataset.src")
    assert source == "/v1/collections/notes/items/mid-2/audio"
    played = api.get(source)
    assert played.status_code == 200 and played.headers["content-type"] == "audio/wav"
    assert wav_seconds(played.content) == pytest.approx(notes["mid-2"], abs=1 / RATE)
    in_player = browser.execute_async_script(  # what the <audio> element plays: the same WAV
        "const done = arguments[0]; fetch(document.getElementById('player').src)"
        ".then(r => r.arrayBuffer()).then(b => done(Array.from(new Uint8Array(b))));")
    assert bytes(in_player) == played.content
    expected = api.post("/v1/collections/notes/search", json={"id": "mid-2", "k": 5}).json()["hits"]
    neighbours = "return [...document.querySelectorAll('#neighbours li')].map(li => li.dataset.id)"
    shown = until(lambda: browser.execute_script(neighbours), what="neighbours")
    assert shown == [hit["id"] for hit in expected]
    until(lambda: browser.find_elements(By.CSS_SELECTOR, "#selfsim .heatmaplayer"), what="self-similarity")

    # an item added by vector says it has nothing to play
    click_point(browser, "by-vector")
    message = until(lambda: browser.find_element(By.ID, "no-audio").text, what="the no-audio message")
    assert "added by vector" in message

    # the label filter hides the others
    Select(browser.find_element(By.ID, "label-filter")).select_by_value("high")
    until(lambda: len(points(browser)) == PER_LABEL, what="only the 'high' points")
    assert sorted(point_ids(browser)) == sorted(i for i in notes if i.startswith("high"))
    Select(browser.find_element(By.ID, "label-filter")).select_by_value("")
    until(lambda: len(points(browser)) == total, what="all points again")

    # an uploaded recording appears as a new point
    upload = tmp_path / "query.wav"
    upload.write_bytes(note("low", 1.1, 7))
    browser.find_element(By.ID, "upload").send_keys(str(upload))
    until(lambda: len(points(browser)) == total + 1, what="the uploaded point")
    assert "(uploaded)" in point_ids(browser)
    click_point(browser, "low-1")  # the picture: an item selected, with its self-similarity
    until(lambda: browser.find_elements(By.CSS_SELECTOR, "#selfsim .heatmaplayer"), what="self-similarity")

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "explorer.png"))
    assert (ARTIFACTS / "explorer.png").stat().st_size > 10_000


def test_page_and_plotly_are_served_without_a_key(server: ServerProcess) -> None:
    page = httpx.get(f"{server.url}/explore")
    assert page.status_code == 200 and "plotly.min.js" in page.text
    script = httpx.get(f"{server.url}/explore/static/plotly.min.js")
    assert script.status_code == 200 and len(script.content) > 1_000_000
    assert "cdn" not in page.text.lower()
    assert httpx.get(f"{server.url}/v1/collections/notes/map").status_code == 401  # the data needs the key


def test_map_html_is_one_self_contained_file(browser: Any, tmp_path: Path) -> None:
    """``sonovec map --html`` on an extract folder: one file, plotly.js inside, N SVG points offline."""
    recordings = tmp_path / "in"
    for i in range(6):
        label = list(PITCHES)[i % 3]
        (recordings / label).mkdir(parents=True, exist_ok=True)
        (recordings / label / f"{i}.wav").write_bytes(note(label, 0.6 + 0.1 * i, i))
    run = [sys.executable, "-m", "sonovec.server.cli"]
    fake = ["--backend", "fake", "--weights", "random", "--no-progress", "--log-level", "warning"]
    done = subprocess.run([*run, "extract", str(recordings), str(tmp_path / "out"), *fake],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    drawn = subprocess.run([*run, "map", str(tmp_path / "out"), "--html", str(tmp_path / "html")],
                           capture_output=True, text=True, timeout=300)
    assert drawn.returncode == 0, drawn.stderr
    page = tmp_path / "html" / "map.html"
    text = page.read_text()
    assert "<script src" not in text and "RANDOM-INIT" in text
    assert os.listdir(tmp_path / "html") == ["map.html"]
    browser.get(page.as_uri())
    until(lambda: len(points(browser)) == 6, what="6 points in the file")
    names = browser.execute_script("return document.getElementById('map').data.map(t => t.name)")
    assert sorted(names) == sorted(PITCHES)


def test_readme_explorer_examples_work_as_written(tmp_path: Path) -> None:
    """The curl lines under '## Explorer' in the README, run as written (with --fail added)."""
    block = section("Explorer").split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line for line in block.splitlines() if line.startswith("curl ")]
    assert len(commands) >= 5
    (tmp_path / "example.wav").write_bytes(note("mid", 1.2, 0))
    (tmp_path / "decoded.wav").write_bytes(note("low", 0.9, 1))
    server = ServerProcess(tmp_path).start()
    try:
        for command in commands:
            run_as_written(command, server.port, tmp_path, timeout=60)
    finally:
        server.stop()
    assert wav_seconds((tmp_path / "example-kept.wav").read_bytes()) == pytest.approx(1.2, abs=1 / RATE)
