"""Fixtures for unit tests: a real PostgreSQL server for the session and a fresh database per test."""

from tests.support.postgres import postgres_server, postgres_url  # noqa: F401 - fixtures
