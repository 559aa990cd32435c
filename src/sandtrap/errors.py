"""SandTrap's exception tree. Engine and library errors are translated into these at the boundary
(`sandbox/docker.py`), so nothing above `sandbox/` sees aiodocker or aiohttp exceptions.

    SandTrapError
    ├── ConfigError            bad configuration file or values (exit code 2)
    ├── ImageError             a target image cannot be found or built
    ├── SandboxError           anything about sandboxes and the engine behind them
    │   ├── EngineUnavailable  the Docker engine does not answer (retry later)
    │   ├── EngineError        the engine answered with an error (bad request, out of disk, ...)
    │   ├── ImageMissing       the configured target image is not present
    │   ├── SandboxGone        the container died or was removed under us
    │   └── PoolExhausted      no sandbox could be had within the allocation timeout
    └── AllocationFailed       a connection got no sandbox (any of the above); the front closes it
"""

from __future__ import annotations


class SandTrapError(Exception):
    """Base of every error SandTrap raises on purpose."""


class ConfigError(SandTrapError):
    """The configuration is unusable; `problems` holds one line per problem, each with its key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class ImageError(SandTrapError):
    """A target image could not be found or built."""


class SandboxError(SandTrapError):
    """A sandbox operation failed."""


class EngineUnavailable(SandboxError):
    """The Docker engine cannot be reached; the caller retries with back-off."""


class EngineError(SandboxError):
    """The engine refused or failed a request; `status` is its HTTP status when known."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ImageMissing(SandboxError):
    """The target image is not present in the engine."""


class SandboxGone(SandboxError):
    """The sandbox's container no longer exists or stopped unexpectedly."""


class PoolExhausted(SandboxError):
    """No sandbox became available within the allocation timeout."""


class AllocationFailed(SandTrapError):
    """A connection could not get its sandbox (the pool was exhausted or the engine failed); the
    SSH front closes the connection as a loaded sshd does."""
