"""Every gcloud command capi shows a user names a real command and real flags.

Where they come from: what `make deploy DRY_RUN=1` prints (every command it runs), the README
and the docs/ pages (```sh blocks and inline `gcloud ...`), and the values and descriptions
of every Terraform output. Checked offline against the installed Cloud SDK's own command tree
(`data/cli/gcloud_completions.py`, the data `gcloud <group> <command> --help` and completion
are generated from), so a typo or a renamed flag fails here instead of in a user's shell.
tests/test_deploy.py checks the commands make deploy actually ran the same way.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT


@functools.cache
def cli_tree() -> dict[str, Any]:
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        pytest.skip("the gcloud CLI is not installed")
    path = Path(gcloud).resolve().parent.parent / "data" / "cli" / "gcloud_completions.py"
    spec = importlib.util.spec_from_file_location("gcloud_completions", path)
    assert spec and spec.loader, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.STATIC_COMPLETION_CLI_TREE


def segments(line: str) -> list[str]:
    """Each `gcloud ...` command in a shell line, up to the unquoted end of its pipeline stage."""
    found = []
    for start in [m.start() for m in re.finditer(r"(?<![\w-])gcloud ", line)]:
        depth, quote, end = 0, "", len(line)
        for index in range(start, len(line)):
            char = line[index]
            if quote:
                quote = "" if char == quote else quote
            elif char in "'\"":
                quote = char
            elif char == "(":
                depth += 1
            elif char == ")":
                if depth == 0:
                    end = index
                    break
                depth -= 1
            elif char in "|;" or line.startswith("&&", index):
                end = index
                break
        found.append(line[start:end].strip())
    return found


def page_commands(path: Path) -> list[str]:
    """The gcloud commands of a Markdown page: its ```sh blocks and its inline `gcloud ...`."""
    text = path.read_text()
    lines: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        lines.extend(line.split(" #")[0] for line in joined.splitlines())
    lines.extend(re.findall(r"`(gcloud [^`]+)`", text))
    return [command for line in lines for command in segments(line)]


def output_commands() -> list[str]:
    """The gcloud commands in Terraform outputs (values and descriptions), ${...} replaced by X."""
    found = []
    for path in [*sorted((ROOT / "terraform").rglob("outputs.tf")), ROOT / "deploy" / "terraform" / "outputs.tf"]:
        for value in re.findall(r'"([^"]*gcloud [^"]*)"', path.read_text()):
            found.extend(segments(re.sub(r"\$\{[^}]+\}", "X", value)))
    return found


def deploy_commands() -> list[str]:
    """Every command `make deploy DRY_RUN=1` prints, with the variables of the docs' example."""
    env = {**os.environ, "DRY_RUN": "1", "PROJECT": "my-shop-prod", "REGION": "europe-west1", "PIXEL_ID": "1"}
    printed = subprocess.run(
        [sys.executable, "-m", "deploy"], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout
    commands = [line[2:].split("    # ")[0] for line in printed.splitlines() if line.startswith("$ gcloud ")]
    # ... and the ones it tells the user to run (reading the key, the /validate check).
    commands += [c for line in printed.splitlines() if not line.startswith("$ ") for c in segments(line)]
    return commands


def all_commands() -> list[str]:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    found = [command for page in pages for command in page_commands(page)]
    return sorted({*found, *output_commands(), *deploy_commands()})


def check(tree: dict[str, Any], command: str) -> None:
    words = shlex.split(command.replace("$(", "").replace("...", "X"))[1:]
    node = tree
    path = ["gcloud"]
    while words and not words[0].startswith("-") and words[0] in node["commands"]:
        path.append(words[0])
        node = node["commands"][words.pop(0)]
    assert not node["commands"], f"{command}: {' '.join(path)} is a group, not a command"
    known = set(node["flags"]) | set(tree["flags"])
    for word in words:
        if word.startswith("--"):
            flag = word.split("=")[0]
            assert flag in known or flag.replace("--no-", "--", 1) in known, f"{command}: no flag {flag}"


COMMANDS = all_commands()


def test_the_commands_users_run_are_all_checked() -> None:
    text = " ".join(COMMANDS)
    for expected in (
        "gcloud scheduler jobs run capi-replay",  # the runbook
        "gcloud scheduler jobs run capi-quality",
        "gcloud logging read",
        "gcloud services enable iam.googleapis.com",  # make deploy
        "gcloud secrets versions add capi-meta-token --data-file=- --project=my-shop-prod",
        "gcloud secrets versions access latest --secret=capi-ingest-key --project=my-shop-prod",
        "gcloud secrets versions add X --project=X --data-file=-",  # the Terraform example's outputs
    ):
        assert expected in text, expected
    assert len(COMMANDS) > 20


def test_terraform_outputs_name_the_project() -> None:
    """A command printed for copy and paste runs against the deployment's project, not gcloud's default."""
    commands = [command for command in output_commands() if " X" in command or "--project" in command]
    assert commands
    for command in commands:
        if "<" not in command:  # descriptions show the shape (<name>, <region>), not a runnable line
            assert "--project=X" in command, command


@pytest.mark.parametrize("command", COMMANDS)
def test_gcloud_command_and_flags_exist(command: str) -> None:
    check(cli_tree(), command)


def test_the_checker_refuses_a_wrong_flag_and_a_group() -> None:
    tree = cli_tree()
    with pytest.raises(AssertionError, match="no flag --schedul"):
        check(tree, "gcloud scheduler jobs create http x --schedul='* * * * *'")
    with pytest.raises(AssertionError, match="is a group"):
        check(tree, "gcloud scheduler jobs --location=x")
