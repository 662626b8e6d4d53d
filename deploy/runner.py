"""Runs each command of the deploy, or only prints it (DRY_RUN=1); a failure becomes a DeployError."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

from deploy.errors import DeployError, diagnose
from deploy.settings import Settings

ROOT = Path(__file__).resolve().parent.parent  # every command runs here


class Runner:
    """Runs (or, in a dry run, only prints) each command, and turns a failure into a DeployError."""

    def __init__(self, settings: Settings, out: TextIO | None = None) -> None:
        self.settings = settings
        self.out = out or sys.stdout

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def show(self, argv: Sequence[str], note: str = "") -> None:
        line = "$ " + shlex.join(argv)
        self.say(f"{line}    # {note}" if note else line)

    def _project_flag(self, argv: Sequence[str]) -> list[str]:
        if argv[0] == "gcloud":
            return [*argv, f"--project={self.settings.project}"]
        return list(argv)

    def _read(self, argv: list[str], env: Mapping[str, str] | None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv,
            cwd=ROOT,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env} if env else None,
        )

    def capture(self, argv: Sequence[str], *, note: str = "", env: Mapping[str, str] | None = None) -> str:
        """Runs a command that reads something and answers its stdout, never shown ("" in a dry run)."""
        argv = self._project_flag(argv)
        self.show(argv, note)
        if self.settings.dry_run:
            return ""
        done = self._read(argv, env)
        if done.returncode != 0:
            self.say(done.stderr.rstrip())
            raise DeployError(f"{shlex.join(argv[:4])} failed.", diagnose(done.stderr, self.settings.project))
        return done.stdout.strip()

    def exists(self, argv: Sequence[str], *, note: str = "") -> bool:
        """Runs a describe/list command: False when Google answers that the thing is not there."""
        argv = self._project_flag(argv)
        self.show(argv, note)
        if self.settings.dry_run:
            return False
        done = self._read(argv, None)
        if done.returncode == 0:
            return bool(done.stdout.strip())
        if re.search(r"NOT_FOUND|[Nn]ot [Ff]ound|does not exist|\b404\b", done.stderr):
            return False
        self.say(done.stderr.rstrip())
        raise DeployError(f"{shlex.join(argv[:4])} failed.", diagnose(done.stderr, self.settings.project))

    def act(
        self,
        argv: Sequence[str],
        *,
        note: str = "",
        stdin: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """Runs a command that changes something, its output streamed to the user as it comes."""
        argv = self._project_flag(argv)
        self.show(argv, note)
        if self.settings.dry_run:
            return
        process = subprocess.Popen(
            argv,
            cwd=ROOT,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **env} if env else None,
        )
        if stdin is not None:
            assert process.stdin is not None
            process.stdin.write(stdin)
            process.stdin.close()
        lines = []
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            self.out.write(line)
            self.out.flush()
        if process.wait() != 0:
            output = "".join(lines)
            raise DeployError(f"{shlex.join(argv[:4])} failed.", diagnose(output, self.settings.project), output)
