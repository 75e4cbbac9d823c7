"""Removing what a test created on the shared stack."""

from __future__ import annotations

import warnings
from collections.abc import Iterable

from rtca.settings import Settings
from rtca.stack.pulsar import delete_topics


def drop_topics(settings: Settings, topics: Iterable[str], *, timeout: float = 60.0) -> None:
    """Delete a test's topics (full names, in the settings' namespace). One a loaded broker keeps past `timeout` is
    a warning, not a failed test: the names are unique to the test, nothing else reads them."""
    names = set(topics)
    left = delete_topics(settings, names.__contains__, timeout=timeout)
    if left:
        warnings.warn(f"test topics left behind: {', '.join(left)}", stacklevel=2)
