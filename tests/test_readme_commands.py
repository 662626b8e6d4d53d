"""Every gcloud command the README and the Terraform example print names a real command and real flags.

Checked offline against the installed Cloud SDK's own command tree
(`data/cli/gcloud_completions.py`, the data `gcloud <group> <command> --help` and completion
are generated from), so a typo or a renamed flag fails here instead of in a user's shell.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import shlex
import shutil
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


def readme_commands() -> list[str]:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    text = "\n".join(page.read_text() for page in pages)
    lines: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        lines.extend(line.split(" #")[0] for line in joined.splitlines())
    lines.extend(re.findall(r"`(gcloud [^`]+)`", text))
    outputs = (ROOT / "terraform/examples/basic/outputs.tf").read_text()
    lines.extend(re.sub(r"\$\{[^}]+\}", "X", value) for value in re.findall(r'"([^"]*gcloud [^"]*)"', outputs))
    return sorted({command for line in lines for command in segments(line)})


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


COMMANDS = readme_commands()


def test_the_readme_has_the_runbook_commands() -> None:
    text = " ".join(COMMANDS)
    for expected in (
        "gcloud scheduler jobs run capi-replay",
        "gcloud scheduler jobs run capi-quality",
        "gcloud secrets versions add capi-meta-token",
        "gcloud secrets versions access latest --secret=capi-ingest-key",
        "gcloud logging read",
    ):
        assert expected in text, expected
    assert len(COMMANDS) > 20


@pytest.mark.parametrize("command", COMMANDS)
def test_gcloud_command_and_flags_exist(command: str) -> None:
    check(cli_tree(), command)


def test_the_checker_refuses_a_wrong_flag_and_a_group() -> None:
    tree = cli_tree()
    with pytest.raises(AssertionError, match="no flag --schedul"):
        check(tree, "gcloud scheduler jobs create http x --schedul='* * * * *'")
    with pytest.raises(AssertionError, match="is a group"):
        check(tree, "gcloud scheduler jobs --location=x")
