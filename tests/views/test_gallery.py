"""`designs gallery`: one static HTML file; catalog strings escaped; images, filters
and the loss curves checked in headless Chromium over the DevTools protocol."""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from analyst_catalog import CONTENTS, HOSTILE, HOSTILE_QUOTES, MISSING, analyst_catalog_out

from flows.cli import EXIT_OK, EXIT_REFUSED, main
from pipeline.catalog.designs import DesignCatalog
from pipeline.catalog.schema import SCHEMA, params_type
from pipeline.views.gallery import build_gallery, image_href, loss_curve_svg

SCREENSHOT_COPY = Path("/tmp/gallery.png")  # for a person to look at
OK_DESIGNS, FAILED_DESIGNS = 10, 6


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    return analyst_catalog_out(tmp_path_factory)


@pytest.fixture(scope="module")
def gallery(out: Path, tmp_path_factory) -> Path:
    """The gallery of the shared catalog, written next to a copy of it (the catalog stays read only)."""
    copy = tmp_path_factory.mktemp("gallery") / "catalog"
    shutil.copytree(out, copy)
    assert main(["gallery", str(copy)]) == EXIT_OK
    return copy / "gallery.html"


# --- the file ---


def test_gallery_lists_designs_failures_and_links_images_relatively(gallery: Path):
    text = gallery.read_text()
    assert text.count('<article class="card"') == OK_DESIGNS
    failed = text.split('<section class="failed"', 1)[1]
    assert failed.count("<tr><td>") == FAILED_DESIGNS and "file not found" in failed and MISSING in failed
    srcs = re.findall(r'<img src="([^"]+)"', text)
    assert len(srcs) == OK_DESIGNS
    for src in srcs:
        assert src.startswith("images/") and (gallery.parent / html.unescape(src)).is_file()
    # self-contained: no scheme anywhere in a src or href, no external resource
    assert not re.search(r'(src|href)="[a-z]+:', text) and "http://" not in text and "https://" not in text
    assert text.count("<polyline") == OK_DESIGNS and text.count("<details>") == OK_DESIGNS
    assert text.count("<script>") == 1
    # key params visible, every params field in the details
    card = text.split('<article class="card"', 2)[1]
    assert "<th>steps</th>" in card and "<th>style_weight</th>" in card and "<th>max_image_pixels</th>" in card
    assert "<th>content_extra.designer</th><td>Sample Studio</td>" in card


def test_catalog_strings_are_escaped(gallery: Path):
    text = gallery.read_text()
    assert HOSTILE not in text and "<b>bold</b>" not in text
    assert html.escape(HOSTILE, quote=True) in text  # the tag, the extra column
    assert html.escape(HOSTILE_QUOTES, quote=True) in text
    assert "&quot;double&quot; &#x27;single&#x27; &amp;" in text
    # in attributes, the tags list is JSON, escaped
    assert 'data-tags="[&quot;garment&quot;' in text and ", &quot;&lt;script&gt;alert(1)&lt;/script&gt;&quot;" in text


def test_hostile_ids_errors_and_paths_are_escaped(tmp_path: Path):
    """Strings the input catalog would refuse (ids) or the pipeline never writes (paths), put in the table directly."""
    out = tmp_path / "hostile"
    catalog = DesignCatalog(out)
    now = datetime.now(UTC)
    base = {
        "run_id": f"run-{HOSTILE}",
        "created_at": now,
        "content_id": f"c{HOSTILE}\"'",
        "style_id": f"s{HOSTILE}",
        "tags": [HOSTILE, HOSTILE_QUOTES],
        "content_extra": json.dumps({"note": HOSTILE, f"k{HOSTILE}": "x"}),
        "style_extra": HOSTILE,
        "params": {"steps": 2, "weights": HOSTILE},
        "loss_total": [3.0, 2.0, 1.0],
        "final_loss": {"total": 1.0},
        "pairing_key": "k",
    }
    rows = [
        {**base, "design_id": "d1", "status": "ok", "output_uri": f"images/{HOSTILE}.png", "notes": HOSTILE},
        {**base, "design_id": "d2", "status": "ok", "output_uri": "javascript:alert(1)"},
        {**base, "design_id": "d3", "status": "ok", "output_uri": "../../etc/passwd"},
        {**base, "design_id": "d4", "status": "failed", "error": f"boom {HOSTILE} \"quoted\" 'single'"},
    ]
    catalog.commit([{name: row.get(name) for name in SCHEMA.names} for row in rows], f"run-{HOSTILE}")
    report = build_gallery(out)
    assert (report.designs, report.failed, report.missing_images) == (3, 1, 3)
    text = report.path.read_text()
    assert HOSTILE not in text and text.count("<script") == 1
    assert not re.search(r'(src|href)="(javascript|\.\./|/)', text)
    assert "<img" not in text, "no image for a path outside OUT or a missing file"
    assert "boom &lt;script&gt;alert(1)&lt;/script&gt; &quot;quoted&quot; &#x27;single&#x27;" in text
    assert f'data-content="c{html.escape(HOSTILE)}&quot;&#x27;"' in text
    assert f'<option value="{html.escape(HOSTILE)}">' in text


def test_image_href_refuses_paths_outside_out(tmp_path: Path):
    out = tmp_path / "out"
    assert image_href("images/ab/x y#?.png", out, out) == "images/ab/x%20y%23%3F.png"
    assert image_href("images/ab/x.png", out, tmp_path / "elsewhere") == "../out/images/ab/x.png"
    for bad in ("/etc/passwd", "../x.png", "images/../../x.png", "javascript:alert(1)", "C:\\x.png", "", None, "a\nb"):
        assert image_href(bad, out, out) is None, bad


def test_loss_curve_svg():
    # Three optimization samples, then the final image's loss, raised by the post-processing.
    svg = loss_curve_svg([100.0, 10.0, 1.0, 50.0], 30)
    points = re.search(r'points="([^"]+)"', svg).group(1).split()
    ys = [float(p.split(",")[1]) for p in points]
    assert len(points) == 3 and ys[0] < ys[1] < ys[2]  # falling loss: the line goes down
    assert ys[1] - ys[0] == pytest.approx(ys[2] - ys[1])  # log scale: 100, 10, 1 evenly spaced
    assert "log scale" in svg
    # The final image is a dot of its own, not a fourth point of the line.
    (dot,) = re.findall(r'<path class="final" d="M([\d.]+),([\d.]+)h0"[^>]*><title>([^<]+)</title>', svg)
    assert float(dot[0]) > float(points[-1].split(",")[0])  # right of the last sample
    assert float(dot[1]) < ys[2]  # above it: the loss rose
    assert dot[2].startswith("final image 50")
    assert "final image 50" in svg.split("</svg>")[1]  # named in the caption under the curve
    assert "final image" not in loss_curve_svg([100.0, 10.0, float("nan")])  # no final loss, no dot
    assert "linear scale" in loss_curve_svg([1.0, 0.0, -1.0])
    assert "<polyline" in loss_curve_svg([1.0, float("nan"), 0.5])
    assert "no loss curve" in loss_curve_svg([1.0]) and "no loss curve" in loss_curve_svg(None)


def test_version_and_output_options(out: Path, tmp_path: Path, capsys):
    target = tmp_path / "elsewhere" / "v2.html"
    target.parent.mkdir()
    assert main(["gallery", str(out), "--version", "2", "--output", str(target)]) == EXIT_OK
    assert "table version 2" in capsys.readouterr().out
    text = target.read_text()
    assert text.count('<article class="card"') == 4 and "table version 2" in text
    src = re.search(r'<img src="([^"]+)"', text).group(1)
    assert src.startswith("../") and (target.parent / src).resolve().is_file()
    assert main(["gallery", str(out), "--version", "42", "-o", str(target)]) == EXIT_REFUSED
    assert "version 42 does not exist" in capsys.readouterr().err
    assert main(["gallery", str(tmp_path / "nothing")]) == EXIT_REFUSED
    assert "no design catalog" in capsys.readouterr().err
    assert main(["gallery", str(out), "-o", str(tmp_path / "no" / "such" / "g.html")]) == EXIT_REFUSED
    assert "does not exist" in capsys.readouterr().err


# --- in a browser ---

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


class DevTools:
    """A minimal Chrome DevTools protocol client over the browser's websocket."""

    def __init__(self, executable: str, profile: Path, timeout: float = 30.0):
        from websockets.sync.client import connect

        self.timeout = timeout
        self.events: list[dict[str, Any]] = []
        self.next_id = 0
        self.process = subprocess.Popen(
            [
                executable,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--disable-extensions",
                "--mute-audio",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not (port_file.is_file() and len(port_file.read_text().splitlines()) >= 2):
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"chromium exited with {self.process.returncode}: {self.process.stderr.read().decode()[-2000:]}"
                )
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.05)
        port, path = port_file.read_text().splitlines()[:2]
        self.socket = connect(f"ws://127.0.0.1:{port}{path}", max_size=None, open_timeout=timeout)

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self.socket.send(json.dumps(message))
        deadline = time.monotonic() + self.timeout
        while True:
            reply = json.loads(self.socket.recv(timeout=max(0.1, deadline - time.monotonic())))
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while True:
            for event in self.events:
                if event.get("method") == method:
                    self.events.remove(event)
                    return event
            self.events.append(json.loads(self.socket.recv(timeout=max(0.1, deadline - time.monotonic()))))

    def close(self) -> None:
        try:
            if hasattr(self, "socket"):
                self.socket.close()
        finally:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Page:
    def __init__(self, tools: DevTools, url: str, width: int = 1280, height: int = 1000):
        self.tools = tools
        target = tools.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = tools.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        self.send("Page.navigate", {"url": url})
        tools.wait_for("Page.loadEventFired")

    def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.tools.send(method, params, self.session)

    def js(self, expression: str) -> Any:
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True, "timeout": 20000},
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}...: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path) -> None:
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": False})["data"]
        path.write_bytes(base64.b64decode(data))


@pytest.fixture(scope="module")
def browser():
    executable = find_chromium()
    if executable is None:
        if os.environ.get("CHROMIUM"):
            pytest.skip(f"CHROMIUM={os.environ['CHROMIUM']} is not a file")
        pytest.skip("chromium is not installed (CI: .ci/install-browser; or set CHROMIUM=/path/to/chrome)")
    pytest.importorskip("websockets.sync.client", reason="the websockets package (a Prefect dependency) is missing")
    with tempfile.TemporaryDirectory(prefix="gallery-chromium-") as profile:
        tools = DevTools(executable, Path(profile))
        try:
            yield tools
        finally:
            tools.close()


LOAD_ALL_IMAGES = """
(async () => {
  const images = Array.from(document.images);
  images.forEach(i => { i.loading = 'eager'; });  // lazy ones below the fold load now
  await Promise.all(images.map(i => i.complete && i.naturalWidth ? null
    : new Promise(done => { i.addEventListener('load', done); i.addEventListener('error', done); if (i.complete) done(); })));
  return images.map(i => ({src: i.getAttribute('src'), width: i.naturalWidth, shown: i.getBoundingClientRect().width}));
})()
"""

VISIBLE_CARDS = "Array.from(document.querySelectorAll('.card')).filter(c => !c.hidden && c.offsetParent !== null).map(c => c.dataset.content + '|' + c.dataset.style + '|' + c.dataset.tags)"


def choose(page: Page, select_id: str, value: str) -> None:
    page.js(
        f"(() => {{ const s = document.getElementById({json.dumps(select_id)}); s.value = {json.dumps(value)}; "
        "s.dispatchEvent(new Event('change')); })()"
    )


def test_gallery_in_headless_chromium(browser: DevTools, gallery: Path, tmp_path: Path):
    page = Page(browser, gallery.as_uri())
    images = page.js(LOAD_ALL_IMAGES)
    assert len(images) == OK_DESIGNS
    for image in images:
        assert image["width"] > 0, f"{image['src']} did not load"
        assert 0 < image["shown"] <= 400, "thumbnails are scaled by CSS"
    # The page's own style and script ran under its Content-Security-Policy; nothing else did.
    assert page.js("getComputedStyle(document.querySelector('.card')).display") == "flex"
    assert page.js("document.getElementById('shown').textContent") == str(OK_DESIGNS)
    assert page.js("document.querySelectorAll('script').length") == 1
    assert not [e for e in browser.events if e.get("method") == "Page.javascriptDialogOpening"], "no alert() ran"
    violations = [
        e
        for e in browser.events
        if e.get("method") == "Log.entryAdded" and "Content Security Policy" in e["params"]["entry"].get("text", "")
    ]
    assert not violations, violations
    page.screenshot(tmp_path / "gallery.png")
    shutil.copyfile(tmp_path / "gallery.png", SCREENSHOT_COPY)

    # Filters hide the cards that do not match, and show them again.
    every = page.js(VISIBLE_CARDS)
    assert len(every) == OK_DESIGNS
    choose(page, "f-content", CONTENTS[0])
    shown = page.js(VISIBLE_CARDS)
    assert 0 < len(shown) < OK_DESIGNS and all(card.startswith(CONTENTS[0] + "|") for card in shown)
    assert len(shown) == sum(card.startswith(CONTENTS[0] + "|") for card in every)
    assert page.js("document.getElementById('shown').textContent") == str(len(shown))
    choose(page, "f-tag", HOSTILE)  # the hostile tag is a plain option value: stripes only
    shown = page.js(VISIBLE_CARDS)
    assert shown and all(card.split("|")[1] == "stripes" and card.startswith(CONTENTS[0] + "|") for card in shown)
    page.screenshot(tmp_path / "gallery-filtered.png")
    choose(page, "f-content", "")
    choose(page, "f-tag", "")
    page.js(
        "(() => { const t = document.getElementById('f-text'); t.value = 'WAVES'; t.dispatchEvent(new Event('input')); })()"
    )
    shown = page.js(VISIBLE_CARDS)
    assert shown and all(card.split("|")[1] == "waves" for card in shown)
    page.js("document.getElementById('filters').reset()")
    page.js("new Promise(r => setTimeout(r, 50))")
    assert len(page.js(VISIBLE_CARDS)) == OK_DESIGNS
    # The failed section lists the errors; the details hold every parameter.
    assert page.js("document.querySelectorAll('#failed tbody tr').length") == FAILED_DESIGNS
    assert page.js("document.querySelector('.card details table').rows.length") == params_type().num_fields
