"""Fixtures shared by the fast front tests (defined with the tests that introduced them)."""

from tests.integration.test_ssh_fake import (  # noqa: F401 - re-exported pytest fixtures
    host_keys_dir,
    start,
)
