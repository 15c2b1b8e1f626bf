"""The lab fault tests use the lab tests' store clients."""

from tests.integration.conftest import cassandra, mongo  # noqa: F401 - fixtures
