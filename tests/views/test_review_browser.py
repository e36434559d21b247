"""`designs review` in headless Chromium (the DevTools driver of tests/views/test_gallery.py):
the served page loads under its CSP, pages forward by key, a verdict given with `f` lands in
OUT/reviews, and it is there after the server restarts."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from review_catalog import build_review_catalog
from test_gallery import DevTools, Page, browser  # noqa: F401 (the fixture)

from pipeline.catalog.reviews import favourite_ids

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT_COPY = Path("/tmp/review-desk.png")  # for a person to look at


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """`designs review OUT` in a process of its own, as a person starts it."""

    def __init__(self, out: Path, reviewer: str = "ana"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "review", str(out), "--port", str(self.port), "--reviewer", reviewer],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(self.url, timeout=5) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"designs review did not start: {self.process.stderr.read().decode()[-2000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # what Ctrl-C's SIGINT does to uvicorn, without a terminal
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def press(page: Page, key: str) -> None:
    codes = {"ArrowRight": 39, "ArrowLeft": 37, "ArrowDown": 40, "ArrowUp": 38}
    event = {"key": key, "code": key if key in codes else f"Key{key.upper()}"}
    if key in codes:
        event["windowsVirtualKeyCode"] = codes[key]
    else:
        event.update(text=key, windowsVirtualKeyCode=ord(key.upper()))
    page.send("Input.dispatchKeyEvent", {"type": "keyDown", **event})
    page.send("Input.dispatchKeyEvent", {"type": "keyUp", **event})


def wait_js(page: Page, expression: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = page.js(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {expression}")
        time.sleep(0.1)


CARDS = "Array.from(document.querySelectorAll('.grid .card')).map(c => c.dataset.design)"
IMAGES = """
(async () => {
  const images = Array.from(document.images);
  await Promise.all(images.map(i => i.complete ? null
    : new Promise(done => { i.addEventListener('load', done); i.addEventListener('error', done); })));
  return images.filter(i => i.naturalWidth > 0).length;
})()
"""


def test_review_desk_in_headless_chromium(browser, tmp_path: Path):  # noqa: F811
    out = tmp_path / "out"
    order = build_review_catalog(out, n=60)
    server = Server(out)
    try:
        page = Page(browser, server.url)
        assert page.js(CARDS) == order[:48]
        assert page.js(IMAGES) == 48, "every thumbnail loaded"
        assert page.js("getComputedStyle(document.querySelector('.card')).display") == "flex"  # the CSS loaded
        assert page.js("document.activeElement.dataset.design") == order[0]  # the script ran: focus on the first
        press(page, "ArrowRight")
        assert page.js("document.activeElement.dataset.design") == order[1]
        press(page, "ArrowLeft")
        assert page.js("document.activeElement.dataset.design") == order[0]
        # n: the next page
        press(page, "n")
        browser.wait_for("Page.loadEventFired")
        wait_js(page, "location.search === '?page=2'")
        assert page.js(CARDS) == order[48:]
        # Left from the first card: the previous page, its last card focused; right again: back here.
        press(page, "ArrowLeft")
        browser.wait_for("Page.loadEventFired")
        wait_js(page, "location.hash === '#last'")
        assert page.js("document.activeElement.dataset.design") == order[47]
        press(page, "ArrowRight")
        browser.wait_for("Page.loadEventFired")
        wait_js(page, "location.search === '?page=2'")
        assert page.js("document.activeElement.dataset.design") == order[48]
        press(page, "ArrowRight")
        chosen = page.js("document.activeElement.dataset.design")
        assert chosen == order[49]
        press(page, "f")
        wait_js(page, "document.body.getAttribute('data-last-verdict')")
        assert page.js("document.body.getAttribute('data-last-verdict')") == f"favourite:{chosen}"
        assert "recorded" in page.js("document.getElementById('ack').textContent")
        assert page.js("document.activeElement.getAttribute('data-verdict')") == "favourite"
        violations = [
            e
            for e in browser.events
            if e.get("method") == "Log.entryAdded" and "Content Security Policy" in e["params"]["entry"].get("text", "")
        ]
        assert not violations, violations
        page.screenshot(tmp_path / "review.png")
        shutil.copyfile(tmp_path / "review.png", SCREENSHOT_COPY)
    finally:
        server.stop()
    assert favourite_ids(out, "ana") == [chosen]
    query = subprocess.run(
        [
            sys.executable,
            "-m",
            "flows.cli",
            "query",
            str(out),
            "select design_id, verdict, reviewer from reviews",
            "--format",
            "json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert query.returncode == 0, query.stderr
    assert json.loads(query.stdout) == [{"design_id": chosen, "verdict": "favourite", "reviewer": "ana"}]

    # Restarted, the desk shows the verdict; on the design's page x rejects it.
    server = Server(out)
    try:
        page = Page(browser, server.url + "?page=2")
        assert (
            page.js(f"document.querySelector('[data-design=\"{chosen}\"]').getAttribute('data-verdict')") == "favourite"
        )
        page = Page(browser, f"{server.url}design/{chosen}?i=49")
        press(page, "x")
        wait_js(page, "document.body.getAttribute('data-last-verdict')")
        assert page.js("document.getElementById('verdict').textContent") == "reject"
    finally:
        server.stop()
    assert favourite_ids(out) == []
