"""`foldem bench live` in exact mode on a few prompts: the summary's structure and its
accounting against the server's own counters. Never asserts the model's answers (or how many
samples it gets right): only that both runs agree with each other and with the server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.bench.live_bench import REPEAT_CHECK, BenchLiveSettings, run_bench_live

pytestmark = pytest.mark.integration

PROMPTS = [  # made up, GSM8K-shaped, with "#### N" answers as the test file has them
    {"question": "Ann has 3 apples and buys 4 more. Then she eats 2. How many apples are left?",
     "answer": "3 + 4 = 7\n7 - 2 = 5\n#### 5"},
    {"question": "A book costs 12 dollars and a pen costs 3 dollars. How much do 2 books and "
                 "5 pens cost?", "answer": "2 * 12 = 24\n5 * 3 = 15\n24 + 15 = 39\n#### 39"},
    {"question": "There are 20 birds on a tree. 8 fly away and 5 more come. How many birds are "
                 "on the tree now?", "answer": "20 - 8 = 12\n12 + 5 = 17\n#### 17"},
    {"question": "Tom runs 3 miles a day for 6 days, then 4 miles on the seventh day. How many "
                 "miles does he run in the week?", "answer": "3 * 6 = 18\n18 + 4 = 22\n#### 22"},
]

SUMMARY_KEYS = {
    "tokens_full", "tokens_msifr", "token_reduction", "server_tokens_full",
    "server_tokens_msifr", "tokens_after_abort", "ledger_equals_server",
    "kept_equal_to_posthoc", "server_decode_seconds_full", "server_decode_seconds_msifr",
    "accepted_per_hour_full", "accepted_per_hour_msifr", "per_validator", "reproduced"}


def test_bench_live_exact_mode_accounts_for_every_token(pg_url: str, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    out = tmp_path / "out"
    s = run_bench_live(BenchLiveSettings(out_dir=out, prompts=len(PROMPTS), max_tokens=96,
                                         mode="exact", prompts_path=str(prompts),
                                         database_url=pg_url))
    assert SUMMARY_KEYS <= set(s)
    assert (s["mode"], s["slots"], s["samples"]) == ("exact", 1, len(PROMPTS))
    assert s["failed"] == {"full": 0, "msifr": 0}
    assert (out / "report.md").is_file() and (out / "tokens.png").is_file()
    assert (out / "rejections_by_validator.png").is_file()

    # One slot, no prompt cache, a seed per sample: the text reproduces, so both runs write the
    # same tokens up to the cut and keep the same samples.
    assert s["reproduced"]["checked"] == REPEAT_CHECK
    assert s["reproduced"]["identical"] == REPEAT_CHECK
    assert s["same_text"]["same_text"] == len(PROMPTS)
    assert s["kept_equal_to_posthoc"] is True and s["kept_sets_equal"] is True
    verdicts = s["own_text_verdicts_equal"]
    assert verdicts["equal"] == verdicts["samples"] == len(PROMPTS)
    assert s["tokens_msifr"] <= s["tokens_full"]

    # Rejections by validator add up to the samples not kept.
    for run, kept in (("full", s["kept_full"]), ("msifr", s["kept_msifr"])):
        assert sum(s["per_validator"][run].values()) == len(PROMPTS) - kept

    # Every call of the baseline ran to its end: the ledger is the server's count, exactly.
    assert s["server_tokens_full"] == s["tokens_full"]
    assert s["tokens_after_abort"]["full_run"]["total"] == 0
    after = s["tokens_after_abort"]
    assert after["check"] == "per call"
    assert after["completed_calls_off"] == 0  # in flight too, for calls that ran to their end
    assert after["aborted_calls"] == s["aborted_msifr"]
    assert s["server_decode_seconds_full"] > 0 and s["server_decode_seconds_msifr"] > 0

    # Ledger + tokens decoded after the hang-up == the server's count. Holds only when the
    # client counts an aborted call in the model's own tokens (llama.cpp's timings); with a
    # client-side estimate for aborted calls it cannot, so it is asserted only then.
    estimated = s["count_sources"]["msifr"].get("tokenizer_estimate", 0)
    if estimated == 0:
        assert s["ledger_equals_server"] is True
        assert s["tokens_msifr"] + after["total"] == s["server_tokens_msifr"]
        assert after["max"] is None or after["max"] >= 0
