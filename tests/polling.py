"""Waiting for a condition in tests that drive real servers or a real browser."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest


def eventually(check: Callable[[], Any], timeout: float, what: str, interval: float = 3) -> Any:
    """``check()``'s first truthy result; the test fails after ``timeout`` seconds without one."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
