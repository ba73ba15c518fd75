"""Housekeeping beside the server: a task run every so often in a daemon thread until stopped.

A run that raises is logged and the task runs again at the next interval: housekeeping must not
take the server down, and what it missed is done the next time."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Periodic:
    def __init__(self, name: str, interval_s: float, task: Callable[[], object]):
        self.name = name
        self.interval_s = interval_s
        self.task = task
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Run the task every ``interval_s`` seconds (the first time one interval from now)."""
        if self._thread is not None:
            return

        def run() -> None:
            while not self._stop.wait(self.interval_s):
                try:
                    self.task()
                except Exception:  # noqa: BLE001 - retried at the next interval
                    log.exception("%s failed; it runs again in %.0f s", self.name, self.interval_s)

        self._stop.clear()
        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
            self._thread = None
