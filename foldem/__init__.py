"""foldem: multi-stage in-flight rejection (MSIFR) for LLM synthetic data."""

from pathlib import Path

__version__ = "0.1.0"

#: The repository (or source tree) root: where `sql/`, `examples/` and `infra/` live.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
