"""The gcloud Firestore emulator on a free loopback port, for the tests and the benchmarks."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(host: str, deadline: float, proc: subprocess.Popen | None) -> None:
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the Firestore emulator exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://{host}/", timeout=1) as response:
                if response.read().strip() == b"Ok":
                    return
        except OSError:
            time.sleep(0.25)
    raise RuntimeError(f"the Firestore emulator on {host} did not answer in time")


@contextmanager
def running_emulator() -> Iterator[str]:
    """Start an emulator we own, yield HOST:PORT with FIRESTORE_EMULATOR_HOST set, stop it."""
    gcloud = shutil.which("gcloud")
    if not gcloud:
        raise RuntimeError("gcloud is not installed: the Firestore emulator is needed (see README)")
    host = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [gcloud, "emulators", "firestore", "start", f"--host-port={host}", "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_ready(host, time.monotonic() + 90, proc)
        os.environ["FIRESTORE_EMULATOR_HOST"] = host
        yield host
    finally:
        os.environ.pop("FIRESTORE_EMULATOR_HOST", None)
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # gcloud starts java as a child: stop the group
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)


def clear(host: str, project: str) -> None:
    """Delete every document of `project` through the emulator's REST endpoint."""
    url = f"http://{host}/emulator/v1/projects/{project}/databases/(default)/documents"
    urllib.request.urlopen(urllib.request.Request(url, method="DELETE"), timeout=10).read()
