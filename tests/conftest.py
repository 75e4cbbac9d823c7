"""One stack per test session: started here (or reused when already up), stopped at the end if we started it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from rtca import stack as rtca_stack
from rtca.settings import Settings, load_settings


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def stack_up(settings: Settings) -> Iterator[Settings]:
    """The real stack (Pulsar with its functions worker, Pinot, Superset), healthy, namespace configured."""
    was_up = all(state.healthy for state in rtca_stack.status(settings))
    rtca_stack.up(settings)
    yield settings
    if not was_up and os.environ.get("RTCA_KEEP_STACK") != "1":
        # The teardown runbook is exercised here, once, at the end of the suite; it asserts nothing is left.
        from rtca.runbook import run_runbooks

        run_runbooks(settings, ["90-teardown"])


@pytest.fixture(scope="session")
def stack(stack_up: Settings) -> Settings:
    """Alias used by the feed and functions tests."""
    return stack_up


@pytest.fixture
def unique() -> str:
    """A short unique suffix so tests that count use their own topics, tables and products."""
    return uuid.uuid4().hex[:8]


@pytest.fixture
def default_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No RTCA_ overrides from the shell that runs the tests: for tests about the settings' defaults."""
    for name in [name for name in os.environ if name.startswith("RTCA_")]:
        monkeypatch.delenv(name)
