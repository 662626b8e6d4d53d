"""main.py served as production serves it: functions-framework's CLI (gunicorn, a gthread
worker) on a free loopback port, configured by environment variables alone."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from tests.fakes.emulator import free_port

ROOT = Path(__file__).resolve().parent.parent.parent
BIN = Path(sys.executable).parent  # this virtualenv's functions-framework


@contextmanager
def running_function(env: Mapping[str, str], target: str = "capi_events") -> Iterator[tuple[int, subprocess.Popen]]:
    """Start main.py's `target` with exactly these variables (and PATH), wait for /healthz,
    yield its port and process, stop it if the test has not."""
    port = free_port()
    with tempfile.TemporaryFile() as output:  # a pipe nobody reads would fill and block the server
        process = subprocess.Popen(
            [
                str(BIN / "functions-framework"),
                f"--target={target}",
                "--source=main.py",
                "--host=127.0.0.1",
                f"--port={port}",
            ],
            cwd=ROOT,
            env={"PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}", **env},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_healthy(port, process, output)
            yield port, process
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)


def _wait_healthy(port: int, process: subprocess.Popen, output: IO[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output.seek(0)
            raise RuntimeError(f"the function exited with {process.returncode}: {output.read().decode()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the function did not answer /healthz within 30 s")
