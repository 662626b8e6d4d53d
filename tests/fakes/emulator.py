"""The gcloud Firestore emulator on a free loopback port, for the tests and the benchmarks.

Also a Firestore client pointed at an emulator that is not there: every call fails, as when
Firestore is down.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

PROJECT = "demo-capi-test"  # a demo- project: the client library never asks for credentials


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(host: str, deadline: float, proc: subprocess.Popen | None, name: str = "Firestore") -> None:
    """Until the emulator at HOST:PORT answers its "Ok" (the Firestore and Pub/Sub emulators both do)."""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the {name} emulator exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://{host}/", timeout=1) as response:
                if response.read().strip() == b"Ok":
                    return
        except OSError:
            time.sleep(0.25)
    raise RuntimeError(f"the {name} emulator on {host} did not answer in time")


@contextmanager
def gcloud_emulator(command: tuple[str, ...], name: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """Start `gcloud COMMAND --host-port=...` on a free loopback port; yield HOST:PORT and its
    process; stop it, even when a test paused it."""
    gcloud = shutil.which("gcloud")
    if not gcloud:
        raise RuntimeError(f"gcloud is not installed: the {name} emulator is needed (see docs/development.md)")
    host = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [gcloud, *command, f"--host-port={host}", "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: gcloud starts java as a child
    )
    try:
        wait_ready(host, time.monotonic() + 90, proc, name)
        yield host, proc
    finally:
        try:
            os.killpg(proc.pid, signal.SIGCONT)  # a test may have paused it (SIGSTOP)
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except ProcessLookupError:
            pass  # a test killed it already
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)


def emulator_process() -> AbstractContextManager[tuple[str, subprocess.Popen]]:
    """The Firestore emulator we own: HOST:PORT and its process."""
    return gcloud_emulator(("emulators", "firestore", "start"), "Firestore")


@contextmanager
def running_emulator() -> Iterator[str]:
    """Start an emulator we own, yield HOST:PORT with FIRESTORE_EMULATOR_HOST set, stop it."""
    with emulator_process() as (host, _):
        os.environ["FIRESTORE_EMULATOR_HOST"] = host
        try:
            yield host
        finally:
            os.environ.pop("FIRESTORE_EMULATOR_HOST", None)


def clear(host: str, project: str) -> None:
    """Delete every document of `project` through the emulator's REST endpoint."""
    url = f"http://{host}/emulator/v1/projects/{project}/databases/(default)/documents"
    urllib.request.urlopen(urllib.request.Request(url, method="DELETE"), timeout=10).read()


def firestore_client_at(host: str, project: str = PROJECT) -> Any:
    """A Firestore client on the emulator at HOST:PORT, whatever FIRESTORE_EMULATOR_HOST says."""
    from google.cloud import firestore

    old = os.environ.get("FIRESTORE_EMULATOR_HOST")
    os.environ["FIRESTORE_EMULATOR_HOST"] = host  # the client reads it once, when built
    try:
        return firestore.Client(project=project)
    finally:
        if old is None:
            os.environ.pop("FIRESTORE_EMULATOR_HOST")
        else:
            os.environ["FIRESTORE_EMULATOR_HOST"] = old


def dead_firestore(project: str = PROJECT) -> Any:
    """A Firestore client on a loopback port where nothing listens: every call is refused."""
    return firestore_client_at(f"127.0.0.1:{free_port()}", project)
