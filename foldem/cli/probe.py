"""`foldem probe`: check an endpoint's streaming, usage, logprobs and whether aborts stop it.

Prints a capability table, optionally writes it as JSON, and stores it in Postgres (table
`endpoint_probes`), where a job that requires honoured aborts looks it up.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

from pydantic import SecretStr

from foldem.core.errors import ConfigError
from tasks.probe.models import ProbeResult

ABORT_METHODS = ("replay_stats", "vllm_metrics", "llamacpp_slots", "llamacpp_metrics", "timing")


def _api_key(env_name: str | None) -> SecretStr | None:
    if env_name is None:
        return None
    value = os.environ.get(env_name)
    if not value:
        raise ConfigError(f"--api-key-env {env_name}: that environment variable is not set")
    return SecretStr(value)


def render_table(result: ProbeResult) -> str:
    """The capability table as plain text."""
    rows = result.table_rows()
    width = max(len(name) for name, _, _ in rows)
    values = max(len("result"), *(len(value) for _, value, _ in rows))  # "unknown" is wider
    lines = [f"endpoint {result.base_url}  model {result.model}  server {result.server}", "",
             f"{'capability':<{width}}  {'result':<{values}}  how it was seen",
             f"{'-' * width}  {'-' * values}  {'-' * 40}"]
    lines += [f"{name:<{width}}  {value:<{values}}  {remark}" for name, value, remark in rows]
    abort = result.abort
    figures = [f"read {abort.tokens_read_before_close} tokens before hanging up"]
    if abort.attempts > 1:
        figures.append(f"{abort.attempts} long requests (max_tokens up to {abort.max_tokens})")
    if abort.server_tokens_after_close is not None:
        figures.append(f"server counted {abort.server_tokens_after_close:g} more after it")
    if abort.server_tokens_predicted is not None:
        figures.append(f"{abort.server_tokens_predicted:g} predicted for the request in all")
    if abort.busy_before is not None:
        figures.append(f"busy before/during/after: {abort.busy_before}/{abort.busy_during}/"
                       f"{abort.busy_after}")
    if result.tokens_per_second:
        figures.append(f"stream rate {result.tokens_per_second:.0f} tokens/s")
    lines += ["", "abort check: " + "; ".join(figures)]
    lines += [f"note: {note}" for note in result.notes]
    return "\n".join(lines)


def _store(result: ProbeResult, database_url: str | None) -> str:
    from tasks.probe.store import record_probe
    from tasks.store.db import (
        get_engine,
        migrate,
        normalize_url,
        redact,
        resolve_database_url,
        session_scope,
    )

    # An explicit --database-url wins; else DATABASE_URL, else the embedded server.
    url = (normalize_url(database_url, source="--database-url") if database_url
           else resolve_database_url())
    migrate(url)  # the probes table may be newer than the database
    with session_scope(get_engine(url)) as session:
        row = record_probe(session, result=result)
    return f"stored as endpoint_probes.id = {row} in {redact(url)}"


def cmd_probe(args: argparse.Namespace) -> int:
    from tasks.probe.endpoint_probe import ProbeOptions, probe_endpoint

    options = ProbeOptions(abort_max_tokens=args.max_tokens, read_tokens=args.read_tokens,
                           settle_seconds=args.settle, abort_method=args.abort_method,
                           **({"prompt": args.prompt} if args.prompt else {}))
    print(f"foldem: probing {args.base_url} (model {args.model}) ...", flush=True)
    result = asyncio.run(probe_endpoint(args.base_url.rstrip("/"), args.model,
                                        api_key=_api_key(args.api_key_env), options=options))
    print()
    print(render_table(result))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(result.model_dump_json(indent=2) + "\n")
        print(f"\nJSON written to {path}")
    if not args.no_store:
        print(_store(result, args.database_url))
    if args.require_abort_honoured and result.abort_honoured is None:
        # As a job with require_abort_honoured does: a probe that measured nothing is no
        # evidence against the endpoint, so it warns instead of failing.
        print("foldem: could not tell whether aborts are honoured (inconclusive, see above); "
              "not failing -- probe again with a larger --max-tokens or a --prompt with a "
              "long answer", flush=True)
    elif args.require_abort_honoured and not result.abort_honoured:
        print("foldem: aborts are not honoured by this endpoint", flush=True)
        return 1
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `probe` to the foldem command."""
    probe = subparsers.add_parser(
        "probe", help="check an endpoint: streaming, usage, logprobs, and whether a "
        "disconnect stops generation",
        description="Run a few short streamed requests and one long request that is hung up "
        "on, then print what the endpoint supports and whether it stopped generating.")
    probe.add_argument("--base-url", required=True, help="OpenAI-compatible base URL (…/v1)")
    probe.add_argument("--model", required=True, help="model name sent in the requests")
    probe.add_argument("--api-key-env", metavar="VAR", help="environment variable with the key")
    probe.add_argument("--json", metavar="PATH", help="also write the result as JSON")
    probe.add_argument("--prompt", help="user message of the probe requests (the replay "
                       "endpoint needs the text of one of its recorded problems)")
    probe.add_argument("--max-tokens", type=int, default=2048, metavar="N",
                       help="length of the request hung up on (default 2048)")
    probe.add_argument("--read-tokens", type=int, default=8, metavar="N",
                       help="tokens read before hanging up (default 8)")
    probe.add_argument("--settle", type=float, default=1.0, metavar="SECONDS",
                       help="wait after the hang-up before each reading (default 1)")
    probe.add_argument("--abort-method", choices=ABORT_METHODS,
                       help="how to check the abort (default: the first status page that "
                       "answers: replay /stats, vLLM /metrics, llama.cpp /slots or /metrics; "
                       "else timing)")
    probe.add_argument("--database-url", help="Postgres URL (default: DATABASE_URL or the "
                       "embedded server)")
    probe.add_argument("--no-store", action="store_true", help="do not store the result")
    probe.add_argument("--require-abort-honoured", action="store_true",
                       help="exit with status 1 when aborts are measured not to be honoured "
                       "(an inconclusive probe only warns)")
    probe.set_defaults(func=cmd_probe)
