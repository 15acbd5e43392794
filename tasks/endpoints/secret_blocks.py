"""API keys kept in Prefect `Secret` blocks (an alternative to environment variables)."""

from __future__ import annotations

from typing import cast

from pydantic import SecretStr

from foldem.core.errors import ConfigError


def key_from_secret_block(endpoint: str, block: str) -> SecretStr:
    """Read the Prefect `Secret` block named `block` from the Prefect API the run talks to
    (PREFECT_API_URL, or the ephemeral one under PREFECT_HOME). Synchronous on purpose: callers
    may sit inside a running event loop, where Prefect would otherwise hand back a coroutine.
    Messages name the block and the endpoint, never the value."""
    from prefect.blocks.system import Secret  # Prefect is imported only when a block is named

    try:
        secret = cast(Secret, Secret.load(block, _sync=True))  # type: ignore[call-arg]
        value = secret.get()
    except ValueError as exc:  # Prefect: "Unable to find block document named ..."
        raise ConfigError(
            f"endpoint {endpoint!r}: no Prefect Secret block named {block!r} ({exc}); create it "
            f"with `Secret(value=...).save({block!r})` or in the Prefect UI, or use "
            "api_key_env") from None
    except Exception as exc:  # noqa: BLE001 - the API unreachable, a block of another type
        raise ConfigError(f"endpoint {endpoint!r}: cannot read the Prefect Secret block "
                          f"{block!r}: {type(exc).__name__}: {exc}") from None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"endpoint {endpoint!r}: the Prefect Secret block {block!r} does not "
                          "hold a non-empty string")
    return SecretStr(value)
