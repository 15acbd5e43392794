"""Fixtures shared by the export tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="module")
def load_dataset(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Any]]:
    """`datasets.load_dataset` for one local file, offline, its caches in a temporary home
    (the settings are read when `datasets` is first imported, so import it only here)."""
    home = tmp_path_factory.mktemp("hf-home")
    with pytest.MonkeyPatch.context() as env:
        for name, value in (("HF_DATASETS_OFFLINE", "1"), ("HF_HUB_OFFLINE", "1"),
                            ("HF_HOME", str(home))):
            env.setenv(name, value)
        import datasets

        def load(kind: str, path: Path) -> Any:
            return datasets.load_dataset(kind, data_files=str(path), split="train",
                                         cache_dir=str(home / "cache"))

        yield load
