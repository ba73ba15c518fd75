"""A private Redis server for tests: 127.0.0.1, a free port, no persistence."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .ports import free_port


class RedisUnavailable(RuntimeError):
    """redis-server is not installed."""


def redis_ping(host: str, port: int, timeout_s: float = 2.0) -> bool:
    """True when a Redis server on host:port answers PING with +PONG (raw RESP, no client library)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    host: str
    port: int
    work_dir: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def log_path(self) -> Path:
        return self.work_dir / "redis.log"

    def stop(self, timeout_s: float = 20) -> None:
        """Stop this server (TERM, then KILL after ``timeout_s``) by its own PID. Safe to call twice."""
        _terminate(self.process, timeout_s)


def _terminate(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def start_redis(work_dir: Path, *, host: str = "127.0.0.1", attempts: int = 3) -> RedisServer:
    """Start ``redis-server`` in the foreground (its PID is ours) and wait until it answers PING."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisUnavailable("redis-server is not installed (apt-get install redis-server)")
    work_dir.mkdir(parents=True, exist_ok=True)
    log_path = work_dir / "redis.log"
    last_error = ""
    for _ in range(attempts):
        port = free_port(host)
        argv = [
            binary,
            "--port",
            str(port),
            "--bind",
            host,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(work_dir),
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
        ]
        with open(log_path, "ab") as log:
            process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=work_dir)
        server = RedisServer(host=host, port=port, work_dir=work_dir, process=process)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and process.poll() is None:
            if redis_ping(host, port, timeout_s=0.5):
                return server
            time.sleep(0.05)
        server.stop()
        last_error = log_path.read_text(errors="replace")[-3000:]
    raise RuntimeError(f"redis-server did not start after {attempts} attempts; log:\n{last_error}")
