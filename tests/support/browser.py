"""Headless Chromium driven over the Chrome DevTools Protocol (a websocket, `websockets`' sync
client): open a page, run JavaScript in it, watch what it fetches, take a screenshot.

Chromium comes from Debian (`make browser`); `chromium_path()` is None without it. The browser
may reach nothing: host names do not resolve and everything else goes to a closed proxy port.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

from tests.support.fake_endpoint import closed_port

STARTUP_S = 30.0
CALL_TIMEOUT_S = 60.0


def chromium_path() -> str | None:
    """Debian's chromium (CI installs it with `make browser`); None when absent."""
    found = shutil.which("chromium")
    if found:
        return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


class BrowserError(RuntimeError):
    pass


class Tab:
    """One page target: `call` a DevTools method, `evaluate` JavaScript, `events` seen so far."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        call_id = self._next_id
        self._ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        deadline = time.monotonic() + CALL_TIMEOUT_S
        while True:
            message = json.loads(self._ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == call_id:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))
            self.events.append(message)

    def wait_for(self, event: str) -> dict[str, Any]:
        """The first `event` not yet consumed (earlier ones included)."""
        deadline = time.monotonic() + CALL_TIMEOUT_S
        while True:
            for i, seen in enumerate(self.events):
                if seen.get("method") == event:
                    return dict(self.events.pop(i).get("params", {}))
            self.events.append(json.loads(self._ws.recv(
                timeout=max(0.1, deadline - time.monotonic()))))

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r:.200}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")

    def redact_recorded_text(self) -> None:
        """Blur, on an audit page, the text that came from recorded generations (problems,
        streamed texts, answers, quoted spans), keeping the layout, highlights and cut marks:
        screenshots of runs over ../shared/data go into docs/, and the recordings themselves
        stay out of the repository. Styles are set through the CSSOM, which the page's
        Content-Security-Policy allows."""
        self.evaluate("""(() => {
            const blur = el => { el.style.setProperty('color', 'transparent', 'important');
                el.style.setProperty('text-shadow', '0 0 12px rgba(0,0,0,.6)', 'important'); };
            const recorded = new Set(['problem', 'reference answer', 'final answer', 'reason',
                                      'span']);
            document.querySelectorAll('dt').forEach(dt => {
                if (recorded.has(dt.textContent.trim()) && dt.nextElementSibling)
                    blur(dt.nextElementSibling); });
            document.querySelectorAll('pre.text, pre.text mark, .tail bdi, ' +
                'details:not(.s-rejected) .where').forEach(blur);
            document.querySelectorAll('pre.text .end, .tail .cutmark, .tail bdi > *')
                .forEach(el => { if (!el.matches('.cutmark, .end')) return;
                    el.style.setProperty('color', '#c0392b', 'important');
                    el.style.setProperty('text-shadow', 'none', 'important'); });
        })()""")

    def screenshot(self, path: Path, *, full_page: bool = False) -> None:
        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": full_page}
        if full_page:
            size = self.call("Page.getLayoutMetrics")["cssContentSize"]
            params["clip"] = {"x": 0, "y": 0, "width": size["width"], "height": size["height"],
                              "scale": 1}
        data = self.call("Page.captureScreenshot", **params)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))


@contextmanager
def chromium_tab(chromium: str, profile: Path,
                 window: tuple[int, int] = (1440, 1000)) -> Iterator[Tab]:
    """A headless Chromium (its own process group, ended however the caller leaves) and its
    first tab, with the Page, Runtime and Network domains on."""
    args = [chromium, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-extensions", "--no-first-run", "--hide-scrollbars",
            f"--user-data-dir={profile}", f"--window-size={window[0]},{window[1]}",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            f"--proxy-server=http://127.0.0.1:{closed_port()}",
            "--remote-debugging-port=0", "--remote-allow-origins=*", "about:blank"]
    profile.mkdir(parents=True, exist_ok=True)
    log = (profile / "chromium.log").open("wb")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        port = _devtools_port(profile, proc)
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        page = next(t for t in targets if t.get("type") == "page")
        with connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as ws:
            tab = Tab(ws)
            for domain in ("Page", "Runtime", "Network"):
                tab.call(f"{domain}.enable")
            tab.call("Emulation.setDeviceMetricsOverride", width=window[0], height=window[1],
                     deviceScaleFactor=1, mobile=False)
            yield tab
    finally:
        end_group(proc)
        log.close()


def _devtools_port(profile: Path, proc: subprocess.Popen[bytes]) -> int:
    """Chromium writes the port it chose (`--remote-debugging-port=0`) into its profile."""
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if marker.exists() and (lines := marker.read_text().splitlines()):
            return int(lines[0])
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise BrowserError(f"chromium did not start: {(profile / 'chromium.log').read_text()[-2000:]}")


def end_group(proc: subprocess.Popen[bytes], *, grace_seconds: float = 10) -> None:
    """SIGTERM to the process group `proc` leads (started with start_new_session), SIGKILL
    after `grace_seconds`: Chromium and a Prefect server both leave children behind."""
    for sig, wait in ((signal.SIGTERM, grace_seconds), (signal.SIGKILL, 5)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)  # the group started for it
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
