"""Test harness helpers: free ports and private real peers (PostgreSQL, Orthanc, Redis, DCMTK).

Nothing here is a test; the fixtures that use these helpers live in ``tests/conftest.py``.

A peer that is not installed makes its tests skip, unless the environment asks for it:
``VOXA_REQUIRE_POSTGRES=1`` (PostgreSQL) or ``VOXA_REQUIRE_INTEROP=1`` (Orthanc, DCMTK, Redis,
and the C compiler for the Orthanc bind shim) turns the skip into a failure. ``scripts/test.sh``
sets both.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

from .ports import free_port

__all__ = ["free_port", "require_env_set", "skip_or_fail"]


def require_env_set(env: str) -> bool:
    """True when the environment variable ``env`` is ``1`` (missing peers must fail, not skip)."""
    return os.environ.get(env, "").strip() == "1"


def skip_or_fail(reason: str, *, require_env: str = "VOXA_REQUIRE_INTEROP") -> NoReturn:
    """Skip the current test, or fail it when ``require_env`` is set to ``1``."""
    if require_env_set(require_env):
        pytest.fail(f"{reason} ({require_env}=1, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)
