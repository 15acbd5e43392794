"""One root exception for the project; specific subclasses carry data.

A rejected sample is *data* (a `RejectionRecord`), never an exception. These errors are for
things a user must fix (config, input) or a run cannot survive (dead endpoint, database down).
The CLI turns any `FoldemError` into its message and `exit_code`, without a traceback.
"""

from __future__ import annotations


class FoldemError(Exception):
    """Root of every error foldem raises on purpose."""

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(FoldemError):
    """Environment or settings are wrong; the message says what to set."""

    exit_code = 2


class SpecError(FoldemError):
    """A job spec is invalid: which file, which field, what is wrong."""

    exit_code = 2

    def __init__(self, file: str, problems: list[tuple[str, str]]) -> None:
        self.file = file
        self.problems = problems  # (dotted field path, what is wrong)
        lines = [f"{file}: invalid job spec"]
        lines += [f"  {field or '<root>'}: {msg}" for field, msg in problems]
        super().__init__("\n".join(lines))


class DataNotFoundError(FoldemError):
    """An input file (prompts, traces) is missing or unreadable."""

    exit_code = 3

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class InputFormatError(FoldemError):
    """An input file exists but a line of it is malformed."""

    exit_code = 3

    def __init__(self, path: str, line: int, reason: str) -> None:
        self.path = path
        self.line = line
        self.reason = reason
        super().__init__(f"{path}:{line}: {reason}")


class ValidatorLoadError(FoldemError):
    """A validator named in a spec cannot be found or breaks the validator contract."""

    exit_code = 2

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"validator {name!r}: {reason}")


class EndpointError(FoldemError):
    """An endpoint call failed for good (after retries, where retrying was safe)."""

    exit_code = 4

    def __init__(self, endpoint: str, reason: str, *, status: int | None = None,
                 retryable: bool = False) -> None:
        self.endpoint = endpoint
        self.reason = reason
        self.status = status
        self.retryable = retryable
        super().__init__(f"endpoint {endpoint!r}: {reason}")


class EndpointAuthError(EndpointError):
    """The endpoint refused the API key (401/403): retrying cannot help."""


class EndpointUnreachableError(EndpointError):
    """Nothing answers at the endpoint's base URL."""


class DatabaseError(FoldemError):
    """The database cannot be reached, migrated or written."""

    exit_code = 5


class RunConflictError(FoldemError):
    """A run id exists already with a different job spec, so it cannot be resumed."""

    exit_code = 2

    def __init__(self, run_id: str, reason: str) -> None:
        self.run_id = run_id
        self.reason = reason
        super().__init__(f"run {run_id!r}: {reason}")


class RunInterruptedError(FoldemError):
    """The run was stopped by Ctrl-C or SIGTERM; what was written stays, and it can resume."""

    exit_code = 130

    def __init__(self, run_id: str, job_path: str, *, recorded: bool) -> None:
        self.run_id = run_id
        self.job_path = job_path
        self.recorded = recorded
        state = "marked interrupted" if recorded else "not marked (it had not started)"
        super().__init__(f"interrupted; run {run_id!r} is {state}. Resume it with: "
                         f"foldem run {job_path} --run-id {run_id}")


class LocalModelUnavailableError(ConfigError):
    """The local model endpoint needs packages that are not installed (xllamacpp, the model
    wheel), or the model file given does not exist; the message says what to install."""


class LocalModelError(FoldemError):
    """The local model server did not start, died, or did not become healthy in time."""

    exit_code = 4
