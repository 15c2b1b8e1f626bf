"""Waiting for a condition in tests that drive real servers or a real browser."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest


def eventually(
    check: Callable[[], Any],
    timeout: float,
    what: str,
    interval: float = 3,
    explain: Callable[[], str] | None = None,
) -> Any:
    """``check()``'s first truthy result; the test fails after ``timeout`` seconds without
    one, with what ``explain()`` says of the state it last saw."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            seen = f"; last seen: {explain()}" if explain else ""
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}{seen}")
        time.sleep(interval)
