"""A real OpenAI-compatible server on the CPU: llama.cpp's `llama-server` with a tiny random-weight
model written by infra/models/make_tiny_gguf.py. The probe must find streaming, usage in the last
chunk, no continuous usage, and honoured aborts; the demo job must run end to end against it.

Runs only where the server binary exists (built once into a cache, ~9 min on 2 idle cores) and
the `gguf` package can write the model; skips with the command that builds both otherwise."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import text

from foldem import PROJECT_ROOT
from tasks.probe.endpoint_probe import ProbeOptions, probe_endpoint
from tasks.probe.models import AbortMethod

BUILD_COMMAND = ("infra/llama/build-llama-server.sh && .venv/bin/pip install gguf && "
                 ".venv/bin/python infra/models/make_tiny_gguf.py")
SERVER = Path(os.environ.get("FOLDEM_LLAMA_SERVER", Path.home() / ".cache" / "foldem" /
                             "llama-server" / "bin" / "llama-server"))
MODEL = Path(os.environ.get("FOLDEM_TINY_GGUF", Path.home() / ".cache" / "foldem" / "models" /
                            "tiny-llama.gguf"))
ALIAS = "tiny-llama"


def _make_model(out: Path) -> Path:
    pytest.importorskip("gguf", reason=f"gguf is not installed; run: {BUILD_COMMAND}")
    script = PROJECT_ROOT / "infra" / "models" / "make_tiny_gguf.py"
    spec = importlib.util.spec_from_file_location("make_tiny_gguf", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path: Path = module.write_model(out, hidden=64, layers=2, ff=128, heads=4, context=8192,
                                    seed=0)
    return path


def test_tiny_model_is_a_loadable_llama_gguf(tmp_path: Path) -> None:
    path = _make_model(tmp_path / "tiny.gguf")
    import gguf

    reader = gguf.GGUFReader(str(path))
    names = [t.name for t in reader.tensors]
    assert names[0] == "token_embd.weight" and "output.weight" in names
    assert sum(n.startswith("blk.") for n in names) == 2 * 9  # 9 tensors per layer
    arch = reader.fields["general.architecture"]
    assert bytes(arch.parts[arch.data[0]]).decode() == "llama"
    tokens = reader.fields["tokenizer.ggml.tokens"]
    vocab = [bytes(tokens.parts[i]).decode() for i in tokens.data]
    assert vocab[:3] == ["<unk>", "<s>", "</s>"] and "<0x0A>" in vocab and "<0xFF>" in vocab
    again = _make_model(tmp_path / "again.gguf")
    assert again.read_bytes() == path.read_bytes()  # deterministic for a seed


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a running llama-server (2 slots, /metrics on)."""
    if not SERVER.is_file():
        pytest.skip(f"llama-server is not built at {SERVER}; run: {BUILD_COMMAND}")
    model = MODEL if MODEL.is_file() else _make_model(tmp_path_factory.mktemp("gguf") / "t.gguf")
    port = _free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(SERVER), "-m", str(model), "--host", "127.0.0.1", "--port",
                                 str(port), "-c", "8192", "-np", "2", "--metrics", "--alias",
                                 ALIAS], stdout=out, stderr=out, stdin=subprocess.DEVNULL)
    root = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama-server exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{root}/health", timeout=2, trust_env=False).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama-server not healthy in 60 s: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield f"{root}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("method", [None, "llamacpp_metrics"], ids=["auto-slots", "metrics"])
async def test_probe_on_llama_server(llama_server: str, method: AbortMethod | None) -> None:
    result = await probe_endpoint(llama_server, ALIAS, options=ProbeOptions(abort_method=method))
    assert result.server == "llama.cpp"
    assert result.abort_method == (method or "llamacpp_slots")
    assert (result.streaming, result.usage, result.continuous_usage) == (True, True, False)
    assert result.logprobs is True
    assert result.abort_honoured is True, result.abort.detail
    assert (result.abort.busy_before, result.abort.busy_during, result.abort.busy_after) == (
        0, 1, 0)


PROMPTS = [  # made up, GSM8K-shaped
    {"question": "Ann has 3 apples and buys 4 more. How many apples does she have?",
     "answer": "3 + 4 = 7\n#### 7"},
    {"question": "A book costs 12 dollars. How much do 2 books cost?", "answer": "#### 24"},
    {"question": "Tom walks 5 miles a day for 3 days. How far does he walk?",
     "answer": "#### 15"},
    {"question": "There are 20 birds and 8 fly away. How many are left?", "answer": "#### 12"},
]


@pytest.mark.slow
@pytest.mark.integration
def test_demo_job_end_to_end_on_llama_server(llama_server: str, prefect_api: None, pg_url: str,
                                             tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.generate import generate
    from tasks.store.db import get_engine

    monkeypatch.chdir(tmp_path)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    spec = yaml.safe_load((PROJECT_ROOT / "examples" / "llama-cpu.yaml").read_text())
    spec["endpoints"][0]["base_url"] = llama_server
    spec["endpoints"][0]["max_concurrent_streams"] = 2
    spec["prompts"] |= {"path": str(prompts), "limit": len(PROMPTS)}
    job = tmp_path / "llama.yaml"
    job.write_text(yaml.safe_dump(spec))
    summary = asyncio.run(generate(job_path=str(job), run_id="llama-e2e",
                                   database_url=pg_url))
    assert summary.status == "completed"
    assert summary.samples == len(PROMPTS) * spec["samples_per_prompt"]
    assert summary.rejected + summary.failed == summary.samples  # nonsense text
    with get_engine(pg_url).connect() as conn:
        rows = list(conn.execute(text("SELECT completion_tokens, count_source, aborted "
                                      "FROM ledger WHERE run_id = 'llama-e2e'")))
    assert len(rows) == summary.samples
    assert all(r.completion_tokens > 0 for r in rows)
    assert any(r.aborted for r in rows)  # length_budget closes streams in flight
    # Nothing left generating on the server once the run is over.
    metrics = httpx.get(llama_server.removesuffix("/v1") + "/metrics", trust_env=False).text
    assert "llamacpp:requests_processing 0" in metrics
