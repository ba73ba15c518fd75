"""Running the DCMTK command-line tools (echoscu, storescu, findscu, movescu, getscu, ...)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping

from . import skip_or_fail


def dcmtk_tool(tool: str) -> str | None:
    """Full path of a DCMTK tool, or None when it is not installed."""
    return shutil.which(tool)


def require_dcmtk(*tools: str) -> None:
    """Skip the test (fail with ``VOXA_REQUIRE_INTEROP=1``) unless all ``tools`` are installed.

    With no arguments, checks ``echoscu`` and ``storescu``.
    """
    wanted = tools or ("echoscu", "storescu")
    missing = [tool for tool in wanted if dcmtk_tool(tool) is None]
    if missing:
        skip_or_fail(f"DCMTK tool(s) not installed: {', '.join(missing)} (apt-get install dcmtk)")


def run_dcmtk(
    tool: str,
    *args: str | os.PathLike[str] | int,
    timeout: float = 60,
    check: bool = False,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a DCMTK tool and return the finished process with stdout/stderr captured as text.

    ``TCP_NODELAY=1`` is set (``env`` may override it): the Debian DCMTK build otherwise leaves
    Nagle's algorithm on, which adds ~40 ms to every small DIMSE message. With ``check=True`` a non-zero exit raises
    ``subprocess.CalledProcessError`` (its message includes the tool's output).
    """
    path = dcmtk_tool(tool)
    if path is None:
        require_dcmtk(tool)
        raise AssertionError("unreachable")  # require_dcmtk skipped or failed
    full_env = dict(os.environ)
    full_env["TCP_NODELAY"] = "1"
    if env:
        full_env.update(env)
    argv = [path, *(os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in args)]
    proc = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=full_env,
        check=False,
    )
    if check and proc.returncode != 0:
        raise subprocess.CalledProcessError(
            proc.returncode,
            argv,
            output=proc.stdout,
            stderr=f"{tool} failed with exit code {proc.returncode}:\n{proc.stdout}\n{proc.stderr}",
        )
    return proc
