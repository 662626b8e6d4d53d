"""The user documentation keeps its promises: README.md is short, every relative link and
#anchor of README.md, CHANGELOG.md and docs/*.md resolves (by GitHub's heading-anchor rules),
the quickstart's `make run` + curl answers byte for byte what the README shows, the profile
example of docs/sgtm.md writes a profile capi reads, and the version is one number everywhere.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import capi
from tests.conftest import EMULATOR_PROJECT, ROOT, make_app, serve
from tests.fakes.function import running_function

README = ROOT / "README.md"
PAGES = [README, ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 300
README_MAX_WIDTH = 120  # "lines of normal length": code and tables included

FENCE = re.compile(r"^(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
LINK = re.compile(r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")


def prose(path: Path) -> list[str]:
    """The lines of a markdown file outside fenced code blocks (code is not markdown)."""
    lines, fenced = [], False
    for line in path.read_text().splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text without markdown (code ticks, emphasis,
    links), lower-cased, every character but letters, digits, `_`, `-` and spaces removed,
    spaces turned into hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a markdown file; repeats get -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for line in prose(path):
        match = HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def links(path: Path) -> list[str]:
    """The targets of the markdown links of a file, outside code blocks and code spans."""
    targets = []
    for line in prose(path):
        targets.extend(LINK.findall(re.sub(r"`[^`]*`", "", line)))
    return targets


def broken_links(path: Path) -> list[str]:
    broken = []
    for target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: not ours to check
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target}: no file {linked}")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading #{anchor} in {linked}")
    return broken


def test_github_slugs_follow_githubs_rules() -> None:
    # Headings of these pages, and what GitHub makes of them.
    assert github_slug("Log lines (the contract metrics are built on)") == "log-lines-the-contract-metrics-are-built-on"
    assert github_slug("Read `capi_quality`'s answer") == "read-capi_qualitys-answer"
    assert github_slug("Idempotency guard (optional)") == "idempotency-guard-optional"
    assert github_slug("Metrics, alerts, dashboard") == "metrics-alerts-dashboard"
    assert github_slug("1. Deploy — public, with an ingest key") == "1-deploy--public-with-an-ingest-key"
    assert github_slug("Valéry's café") == "valérys-café"


def test_the_checker_finds_a_broken_link_and_a_broken_anchor(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    other = tmp_path / "other.md"
    other.write_text("# Other\n\n## A section\n\n## A section\n")
    page.write_text(
        "# Page\n\n[ok](other.md#a-section-1) [ok](#page) [gone](missing.md) [bad](other.md#nope)\n"
        "[web](https://example.com/x) `[code](nowhere.md)`\n\n```md\n[fenced](nowhere.md)\n```\n"
    )
    assert anchors(other) == {"other", "a-section", "a-section-1"}
    problems = broken_links(page)
    assert len(problems) == 2
    assert problems[0].startswith("missing.md: no file")
    assert problems[1].startswith("other.md#nope: no heading #nope")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    assert broken_links(page) == []


# The files whose text users read outside the docs (a `fix` in capi_quality's answer, an alert's
# documentation, a Terraform variable's description, the tag template's notes): the docs pages
# they point to must exist, and they no longer point to README sections that moved to docs/.
USER_VISIBLE_POINTERS = [
    ROOT / "capi" / "quality.py",
    *sorted((ROOT / "terraform").rglob("*.tf")),
    *sorted((ROOT / "terraform" / "examples").rglob("*.example")),
    ROOT / "sgtm" / "template.tpl",
    ROOT / "sgtm" / "README.md",
]
DOCS_POINTER = re.compile(r"docs/([a-z0-9-]+\.md)(?:#([\w-]+))?")


@pytest.mark.parametrize("path", USER_VISIBLE_POINTERS, ids=lambda p: str(p.relative_to(ROOT)))
def test_user_visible_pointers_name_a_docs_page_and_heading_that_exist(path: Path) -> None:
    text = path.read_text()
    readme_section = re.search(r"README[\s,:/]+(section\s+)?(\\?\"|[A-Z][a-z]+)", text)
    assert readme_section is None, "points to a README section: name its docs page"
    for page, anchor in DOCS_POINTER.findall(text):
        target = ROOT / "docs" / page
        assert target.is_file(), f"{path.name} cites docs/{page}"
        assert not anchor or anchor in anchors(target), f"{path.name} cites docs/{page}#{anchor}"


@pytest.mark.parametrize("path", sorted((ROOT / "capi").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_code_comments_point_to_docs_pages_and_headings_that_exist(path: Path) -> None:
    for page, anchor in DOCS_POINTER.findall(path.read_text()):
        target = ROOT / "docs" / page
        assert target.is_file(), f"{path.name} cites docs/{page}"
        assert not anchor or anchor in anchors(target), f"{path.name} cites docs/{page}#{anchor}"


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {(README.parent / target.partition("#")[0]).resolve() for target in links(README)}
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert page.resolve() in linked, f"README does not link {page.relative_to(ROOT)}"


def test_the_readme_is_short_with_lines_of_normal_length() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) < README_MAX_LINES
    answer = quickstart()[2].decode()  # shown byte for byte as capi writes it: one line
    too_wide = [
        (number, len(line)) for number, line in enumerate(lines, 1) if len(line) > README_MAX_WIDTH and line != answer
    ]
    assert too_wide == []


# -- The quickstart, byte for byte ---------------------------------------------------------


def make_run_env() -> dict[str, str]:
    """The variables `make run` gives the function: each `NAME=$${NAME:-default}` of its recipe."""
    recipe = re.search(r"^run:.*?\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M)
    assert recipe, "no run target in the Makefile"
    pairs = re.findall(r"\b([A-Z_]+)=\$\$\{\1:?-([^}]*)\}", recipe.group(1))
    assert pairs, "make run sets no variables"
    return dict(pairs)


def quickstart() -> tuple[str, dict[str, Any], bytes]:
    """The README's curl example: its path, its JSON body, and the answer the README shows."""
    text = README.read_text()
    curl = re.search(r"```sh\n(curl -s -X POST localhost:8080(/\S+).*?)```\n+.*?```json\n(.*?)\n```", text, re.S)
    assert curl, "no quickstart curl example followed by its answer in the README"
    words = shlex.split(curl.group(1).replace("\\\n", " "))
    body = json.loads(words[words.index("-d") + 1])
    return curl.group(2), body, curl.group(3).encode()


def test_make_run_answers_the_readme_curl_byte_for_byte() -> None:
    path, body, shown = quickstart()
    env = make_run_env()
    assert env["DRY_RUN"] == "true"  # "nothing leaves your machine"
    with running_function(env) as (port, _process):
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
            assert response.read() == shown


# -- The profile example of docs/sgtm.md ---------------------------------------------------


@pytest.mark.emulator
def test_the_docs_profile_example_writes_a_profile_capi_reads(firestore_db: Any, graph: Any) -> None:
    text = (ROOT / "docs" / "sgtm.md").read_text()
    example = re.search(r"```python\n(.*?db\.collection\(.*?)```", text, re.S)
    assert example, "docs/sgtm.md has no Python example writing a profile"
    code = example.group(1)
    project = re.search(r'firestore\.Client\(project="([^"]+)"\)', code)
    assert project, "the example names its project"
    # The example as a user runs it, on the emulator's project instead of theirs.
    exec(compile(code.replace(project.group(1), EMULATOR_PROJECT), "docs/sgtm.md", "exec"), {})

    user_id = re.search(r'save_profile\(\s*"([^"]+)"', code)
    assert user_id, "the example calls save_profile with a user id"
    app = make_app(graph, firestore=firestore_db, PROFILE_COLLECTION="users", DEFAULT_COUNTRY="US")
    event = {
        "event_name": "purchase",
        "event_id": "docs-profile-1",
        "user_id": user_id.group(1),
        "page_location": "https://shop.example.com/thanks",
        "user_agent": "Mozilla/5.0",
        "value": 1,
        "currency": "EUR",
    }
    answer = serve(app).post("/validate", json=event).get_json()
    filled = answer["match_keys"][0]["from_profile"]
    # Every field the example writes reaches Meta's event (phone completed by the profile's country).
    assert set(filled) >= {"em", "ph", "fn", "ln", "ct", "zp", "country"}, filled


# -- One version ---------------------------------------------------------------------------


def test_one_version_in_the_package_the_project_and_the_changelog() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert capi.__version__ == project == "0.3.0"
    headings = re.findall(r"^## (.+)$", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert headings[0] == f"{capi.__version__} (unreleased)"  # the release in the making, on top
    released = [heading.split(" - ")[0] for heading in headings[1:]]
    assert released == ["0.2.0", "0.1.0"], released
