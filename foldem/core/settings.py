"""Process-wide settings from the environment (pydantic-settings).

Job-specific choices live in the job spec (`foldem.spec.job`); this module holds what belongs to
the machine: where state lives, which database, where the shared data is. Secrets are SecretStr
so they never print.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from foldem.core.errors import ConfigError


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FOLDEM_", extra="ignore")

    state_dir: Path = Field(
        default=Path(".foldem"),
        description="Directory for local state: the embedded Postgres data, the tokenizer cache, "
        "downloaded data and Prefect's home when none is set. Env: FOLDEM_STATE_DIR.",
    )
    database_url: SecretStr | None = Field(
        default=None,
        validation_alias="DATABASE_URL",
        description="SQLAlchemy URL of an existing Postgres "
        "(postgresql+psycopg://user:pw@host/db). "
        "Unset: a private embedded Postgres under state_dir. Env: DATABASE_URL.",
    )
    data_dir: Path | None = Field(
        default=None,
        description="Directory holding gsm8k/ and traces/ (the shared data). Unset: ../shared/data "
        "beside the project if it exists, else a download cache under state_dir. "
        "Env: FOLDEM_DATA_DIR.",
    )
    download: bool = Field(
        default=True,
        description="Allow downloading public data (GSM8K) when it is not found locally. "
        "Env: FOLDEM_DOWNLOAD.",
    )
    lean_http: bool = Field(
        default=True,
        description="Read plain-http endpoints with foldem's own HTTP/1.1 transport "
        "(tasks/endpoints/plain_http.py), which decodes each network read in bulk instead of "
        "one HTTP chunk per token; https always uses the SDK's standard one. False: the "
        "standard one everywhere. Env: FOLDEM_LEAN_HTTP.",
    )

    @property
    def resolved_state_dir(self) -> Path:
        return self.state_dir.expanduser().resolve()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings, read once; a bad value fails with what to set, not a traceback."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid environment settings: {problems}") from None
