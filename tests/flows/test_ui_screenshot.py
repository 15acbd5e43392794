"""The Prefect UI on a finished foldem run, as a person would see it: a real Prefect server with
its UI, a small real `foldem run` against it, then headless Chromium renders the run page and the
summary artifact. Screenshots go to docs/ui/ (docs/UI.md embeds them), but only after the
rendered DOM proves the UI showed this run and its artifacts, not an error page or a blank one.

Chromium comes from Debian (`apt-get install -y chromium`); without it the test is skipped.
The browser may reach only 127.0.0.1: other host names do not resolve and everything else is
sent to a closed proxy port (the V2 UI bundles an analytics client).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
import yaml
from pydantic import BaseModel

from foldem import PROJECT_ROOT
from tests.support.browser import chromium_path, end_group
from tests.support.fake_endpoint import closed_port
from tests.support.jobs import job_dict
from tests.support.tracedata import require_shared

pytestmark = [pytest.mark.integration, pytest.mark.skipif(
    chromium_path() is None, reason="chromium not installed (Debian: apt-get install -y chromium)")]

DOCS_UI = PROJECT_ROOT / "docs" / "ui"
JOB_NAME = "ui-demo"
WINDOW = (1440, 1000)
TALL_WINDOW = (1440, 1250)  # the summary artifact is a long page
# Virtual time, not wall time: the SPA's timers and fetches run until the page is idle or this
# much virtual time has passed; a finished page takes ~3-7 s of wall time on 2 cores.
VIRTUAL_TIME_MS = 20_000
MIN_COLOURS = 200  # a blank page has 1; the UI's "not found" card ~300; a run page ~900


class FlowRunRow(BaseModel):
    """The fields of Prefect's flow run JSON this test reads."""

    id: UUID
    name: str
    state_type: str | None
    parameters: dict[str, Any]


class ArtifactRow(BaseModel):
    id: UUID
    flow_run_id: UUID | None
    key: str | None
    type: str | None
    data: Any


class PngFacts(BaseModel):
    width: int
    height: int
    colours: int  # distinct RGB values in a sample of every 4th pixel of every 4th row


def png_facts(data: bytes) -> PngFacts:
    """Decode an 8-bit RGB/RGBA non-interlaced PNG (what Chromium writes) with the stdlib only."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, [], b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat.append(body)
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour_type in (2, 6) and interlace == 0, header
    bpp = 3 if colour_type == 2 else 4
    stride = width * bpp
    raw = zlib.decompress(b"".join(idat))
    assert len(raw) == height * (stride + 1), "pixel data does not match the header's size"
    prev = bytearray(stride)
    colours: set[bytes] = set()
    for y in range(height):
        start = y * (stride + 1)
        row = _unfilter(raw[start], bytearray(raw[start + 1:start + 1 + stride]), prev, bpp)
        if y % 4 == 0:
            colours.update(bytes(row[i:i + 3]) for i in range(0, stride, bpp * 4))
        prev = row
    return PngFacts(width=width, height=height, colours=len(colours))


def _unfilter(kind: int, row: bytearray, prev: bytearray, bpp: int) -> bytearray:
    if kind == 1:  # Sub
        for i in range(bpp, len(row)):
            row[i] = (row[i] + row[i - bpp]) & 255
    elif kind == 2:  # Up
        row = bytearray((a + b) & 255 for a, b in zip(row, prev, strict=True))
    elif kind == 3:  # Average
        for i in range(len(row)):
            left = row[i - bpp] if i >= bpp else 0
            row[i] = (row[i] + ((left + prev[i]) >> 1)) & 255
    elif kind == 4:  # Paeth
        for i in range(len(row)):
            a = row[i - bpp] if i >= bpp else 0
            b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            row[i] = (row[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    return row


@contextmanager
def prefect_server(home: Path) -> Iterator[str]:
    """`prefect server start` with its UI on a free loopback port; yields the base URL.
    The server runs in its own process group, which is ended however the test leaves."""
    port = closed_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "DO_NOT_TRACK": "1", "PREFECT_UI_ENABLED": "true",
           # Without this the UI calls the API on the default port 4200, whatever --port says.
           "PREFECT_UI_API_URL": f"{base}/api",
           "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false"}
    env.pop("PREFECT_API_URL", None)
    log = home / "server.log"
    home.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
             "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not _healthy(base):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Prefect server did not come up:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield base
    finally:
        end_group(proc, grace_seconds=15)


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/api/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def render(chromium: str, url: str, profile: Path, png: Path | None = None,
           window: tuple[int, int] = WINDOW) -> str:
    """The DOM of `url` after the SPA settled; also a screenshot when `png` is given."""
    args = [chromium, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-extensions", "--no-first-run", "--hide-scrollbars",
            f"--user-data-dir={profile}", f"--window-size={window[0]},{window[1]}",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            f"--proxy-server=http://127.0.0.1:{closed_port()}",  # loopback bypasses it
            f"--virtual-time-budget={VIRTUAL_TIME_MS}", "--dump-dom"]
    if png is not None:
        args.append(f"--screenshot={png}")
    res = subprocess.run([*args, url], capture_output=True, text=True, timeout=90,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


def run_small_job(tmp_path: Path, api: str, db_url: str, run_id: str) -> None:
    # 16 samples in 2 shards of 8; with these prompts one stream is closed early (measured).
    data = job_dict("replay", limit=4, samples=4, name=JOB_NAME)
    data["replay"]["tokens_per_second"] = 200
    data["export"] = {"dir": "out/{run_id}"}  # relative: the summary shows no temp path
    # The test database holds other tests' runs of the same prompts: deduplicating against
    # them would reject every sample here, which is not what a user's run shows.
    data["dedup"] = {"against_earlier_runs": False}
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(data, sort_keys=False))
    env = {**os.environ, "PREFECT_API_URL": api, "DATABASE_URL": db_url,
           "PREFECT_HOME": str(tmp_path / "client-home"),
           "FOLDEM_STATE_DIR": str(tmp_path / "state")}
    res = subprocess.run([sys.executable, "-m", "foldem.cli.main", "run", str(job),
                          "--run-id", run_id], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=180, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]


def find_run(api: str, run_id: str) -> tuple[FlowRunRow, list[ArtifactRow]]:
    """The flow run that finished `run_id` (the one that wrote its summary artifact; with
    peers, several flow runs share a run id) and that flow run's artifacts."""
    summaries = httpx.post(f"{api}/artifacts/filter", timeout=10, json={
        "artifacts": {"key": {"any_": [f"{JOB_NAME}-summary"]}}})
    summaries.raise_for_status()
    owners = {ArtifactRow.model_validate(a).flow_run_id for a in summaries.json()}
    assert len(owners) == 1 and None not in owners, summaries.json()
    got = httpx.get(f"{api}/flow_runs/{owners.pop()}", timeout=10)
    got.raise_for_status()
    run = FlowRunRow.model_validate(got.json())
    assert run.parameters.get("run_id") == run_id, run.parameters
    arts = httpx.post(f"{api}/artifacts/filter", timeout=10, json={
        "artifacts": {"flow_run_id": {"any_": [str(run.id)]}}})
    arts.raise_for_status()
    return run, [ArtifactRow.model_validate(a) for a in arts.json()]


def keep_screenshot(png: Path, window: tuple[int, int], name: str) -> None:
    facts = png_facts(png.read_bytes())
    assert (facts.width, facts.height) == window
    assert facts.colours > MIN_COLOURS, f"{name} looks blank: {facts}"
    DOCS_UI.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(png, DOCS_UI / name)


def test_run_page_and_summary_artifact_render(tmp_path: Path, pg_url: str) -> None:
    chromium = chromium_path()
    assert chromium is not None  # the module is skipped otherwise
    require_shared()
    run_id = f"ui-demo-{time.strftime('%Y%m%d-%H%M%S')}"
    with prefect_server(tmp_path / "server-home") as base:
        api = f"{base}/api"
        run_small_job(tmp_path, api, pg_url, run_id)
        flow_run, artifacts = find_run(api, run_id)
        assert flow_run.state_type == "COMPLETED"
        by_key = {a.key or "(no key)": a for a in artifacts}
        keys = [f"{JOB_NAME}-progress", f"{JOB_NAME}-quality-gate", f"{JOB_NAME}-summary"]
        assert set(keys) <= set(by_key), sorted(by_key)
        assert by_key[f"{JOB_NAME}-progress"].data == 100  # the bar ended full

        # Prefect 3.8 serves two UIs; V2 (under /v2) is what a browser gets by default.
        run_page = f"{base}/v2/runs/flow-run/{flow_run.id}"
        shot = tmp_path / "flow-run.png"
        dom = render(chromium, f"{run_page}?tab=Artifacts", tmp_path / "p1", shot)
        assert "Not Found" not in dom
        for expected in [flow_run.name, run_id, *keys]:
            assert expected in dom, f"{expected!r} not on the run page"
        keep_screenshot(shot, WINDOW, "flow-run.png")

        dom = render(chromium, f"{run_page}?tab=TaskRuns", tmp_path / "p2")
        for shard in ("shard-0000 (8 samples)", "shard-0001 (8 samples)"):
            assert shard in dom, f"task {shard!r} not listed"

        summary = by_key[f"{JOB_NAME}-summary"]
        shot = tmp_path / "summary-artifact.png"
        dom = render(chromium, f"{base}/v2/artifacts/artifact/{summary.id}", tmp_path / "p3",
                     shot, TALL_WINDOW)
        for expected in (f"{JOB_NAME}-summary", "foldem run", run_id, "tokens saved",
                         flow_run.name):
            assert expected in dom, f"{expected!r} not on the summary artifact page"
        keep_screenshot(shot, TALL_WINDOW, "summary-artifact.png")
