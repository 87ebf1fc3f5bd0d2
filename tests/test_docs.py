"""The docs pages cannot rot: everything they cite must still be in the repository.

Per page under ``docs/``, the project README and SECURITY.md:

* every backticked repository path (``paysys/messaging/relay.py``, ``paysys/tcc/``) exists;
* every ``tests/<file>.py::<name>`` names a test function defined in that file;
* after a backticked ``.py`` path, the backticked names that follow it (``consume_batch``,
  ``Message.TRANSITIONS``, joined by commas or "and") are defined in that file;
* every other backticked Python name (``next_send_at``, ``TCC_RETRY_SCHEDULE``) occurs in the code;
* every ``manage.py <command>`` is a management command, every ``make <target>`` a Makefile target;
* every relative Markdown link points to a file, and its ``#anchor`` to a heading of that file.

Runtime paths under ``var/`` (what ``make run`` creates) and URLs are not repository paths.
The README stays a front page: under 250 lines, linking every docs page.

Static text checks only (no database, no imports of the code): well under a second.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))
README = ROOT / "README.md"
PAGES = [README, ROOT / "SECURITY.md", *DOCS]
README_MAX_LINES = 250
# Django's own commands a page may name (not in the project's management/commands folders)
DJANGO_COMMANDS = {"shell", "createsuperuser", "check", "migrate", "dbshell", "makemigrations"}
CODE_DIRS = ("paysys", "orders", "accounts", "accounting", "notifications", "tests")

# commands and make targets named in the docs that another change is adding (issue 18); once
# they exist they are checked like any other
PENDING_COMMANDS: set[str] = set()
PENDING_MAKE_TARGETS: set[str] = set()

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
SPAN = re.compile(r"`([^`\n]+)`")
TEST_REF = re.compile(r"(tests/[\w/]+\.py)::(\w+)")
PATH_THEN_NAMES = re.compile(r"`([\w/.-]+\.py)`((?:\s*(?:,|and)?\s*`[\w.]+`)+)")
FILE_SUFFIXES = (
    ".py",
    ".md",
    ".ini",
    ".cfg",
    ".txt",
    ".lock",
    ".toml",
    ".json",
    ".yml",
    ".yaml",
    ".html",
)
PY_NAME = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _prose(text: str) -> str:
    """The page without its fenced blocks (diagrams, shell, JSON)."""
    return FENCE.sub("", text)


def _shell(text: str) -> str:
    return "\n".join(body for kind, body in FENCE.findall(text) if kind in ("sh", "bash", "shell"))


@cache
def _defined(path: Path) -> dict[str, set[str]]:
    """Top-level names of a module (functions, classes, assignments), each with the names
    defined in its body (methods, class attributes)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: dict[str, set[str]] = {}

    def targets(node) -> list[str]:
        if isinstance(node, ast.Assign):
            return [t.id for t in node.targets if isinstance(t, ast.Name)]
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            return [node.target.id]
        return []

    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names[node.name] = set()
        elif isinstance(node, ast.ClassDef):
            inner = set()
            for child in node.body:
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    inner.add(child.name)
                inner.update(targets(child))
            names[node.name] = inner
        else:
            for name in targets(node):
                names[name] = set()
    return names


@cache
def _code_words() -> frozenset[str]:
    words: set[str] = set()
    for folder in CODE_DIRS:
        for path in (ROOT / folder).rglob("*.py"):
            if path == Path(__file__).resolve():
                continue  # this checker's own examples of wrong names
            words.update(re.findall(r"\w+", path.read_text(encoding="utf-8")))
    for name in ("Makefile", "Procfile", "setup.cfg"):
        words.update(re.findall(r"\w+", (ROOT / name).read_text(encoding="utf-8")))
    return frozenset(words)


def _is_repo_path(span: str) -> bool:
    if (
        " " in span
        or span.startswith(("/", "http", "~", "$", "var/"))
        or "::" in span
        or "*" in span
    ):
        return False  # var/: what make run creates, not a file of the repository
    if "://" in span or "=" in span:
        return False  # a URL or an assignment
    if "/" not in span:
        return False
    return span.endswith("/") or span.endswith(FILE_SUFFIXES)


def _is_code_name(span: str) -> bool:
    """A Python-looking name worth checking: snake_case or CAPS with an underscore, or dotted."""
    if not PY_NAME.fullmatch(span):
        return False
    last = span.rsplit(".", 1)[-1]
    return "_" in last.strip("_") and len(last) >= 4


def problems(page: Path) -> list[str]:
    text = page.read_text(encoding="utf-8")
    prose = _prose(text)
    found: list[str] = []

    for span in SPAN.findall(prose):
        if _is_repo_path(span) and not (ROOT / span).exists():
            found.append(f"path `{span}` does not exist")
        elif _is_code_name(span) and span.rsplit(".", 1)[-1] not in _code_words():
            found.append(f"`{span}` occurs nowhere in the code")

    for file, name in TEST_REF.findall(text):
        path = ROOT / file
        if not path.exists():
            found.append(f"test file {file} does not exist")
        elif not name.startswith("test_") or name not in _defined(path):
            found.append(f"{file}::{name} is not a test function defined in {file}")

    for file, names in PATH_THEN_NAMES.findall(prose):
        path = ROOT / file
        if not path.exists():
            continue  # reported above
        defined = _defined(path)
        for dotted in re.findall(r"`([\w.]+)`", names):
            head, _, member = dotted.partition(".")
            if head not in defined or (member and member not in defined[head]):
                found.append(f"`{dotted}` is not defined in {file}")

    commands = {
        p.stem for folder in CODE_DIRS for p in (ROOT / folder).glob("**/management/commands/*.py")
    }
    for command in re.findall(r"manage\.py (\w+)", text):
        if (
            command not in commands
            and command not in PENDING_COMMANDS
            and command not in DJANGO_COMMANDS
        ):
            found.append(f"manage.py {command} is not a management command")

    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(encoding="utf-8"), re.M))
    made = re.findall(r"^make (\w+)", _shell(text), re.M) + [
        s.split()[1] for s in SPAN.findall(prose) if s.startswith("make ") and len(s.split()) > 1
    ]
    for target in (
        t for t in made if "=" not in t
    ):  # make PYTHON=… venv: a variable, then the target
        if target not in targets and target not in PENDING_MAKE_TARGETS:
            found.append(f"make {target} is not a Makefile target")

    for link in LINK.findall(prose):
        if link.startswith(("http://", "https://", "#", "mailto:")):
            continue
        file, _, anchor = link.partition("#")
        target = (page.parent / file) if file else page
        if not target.exists():
            found.append(f"link {link} points to nothing")
        elif anchor and target.suffix == ".md" and anchor not in anchors(target):
            found.append(f"link {link}: no heading #{anchor} in {file or page.name}")
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    prose = _prose(page.read_text(encoding="utf-8"))
    return {slug(line.lstrip("#")) for line in prose.splitlines() if re.match(r"#{1,6} ", line)}


def test_there_are_pages_and_an_index_linking_every_one():
    index = (ROOT / "docs" / "README.md").read_text(encoding="utf-8")
    assert len(DOCS) >= 6
    unlinked = [p.name for p in DOCS if p.name != "README.md" and f"({p.name})" not in index]
    assert unlinked == []


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_everything_a_page_cites_exists(page):
    found = problems(page)
    assert not found, (
        f"{page.relative_to(ROOT)} cites what the repository does not have:\n" + "\n".join(found)
    )


def test_every_relative_link_of_the_readme_and_the_docs_resolves_with_its_anchor():
    broken = [
        f"{page.relative_to(ROOT)}: {problem}"
        for page in PAGES
        for problem in problems(page)
        if problem.startswith("link ")
    ]
    assert broken == []


def test_the_readme_is_a_front_page_linking_every_docs_page():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) < README_MAX_LINES
    unlinked = [p.name for p in DOCS if f"(docs/{p.name})" not in text]
    assert unlinked == []
    assert "(SECURITY.md)" in text
    # the first screen: the two commands and the quickstart's first call
    first_screen = "\n".join(text.splitlines()[:60])
    assert "make run" in first_screen and "make demo" in first_screen
    assert "POST http://127.0.0.1:8000/api/v1/orders" in first_screen


def test_the_checker_catches_a_wrong_path_test_and_name(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "`paysys/messaging/nowhere.py` and `tests/messaging/test_outbox.py::test_no_such_test` and\n"
        "`paysys/messaging/consumption.py` `consume_batch`, `no_such_function`. Also `NO_SUCH_SETTING_X`\n"
        "and `manage.py no_such_command` and [a link](missing.md) and [an anchor](page.md#nowhere)\n"
        "and `var/made-at-run-time.json` and `manage.py shell`\n"
    )
    assert problems(page) == [
        "path `paysys/messaging/nowhere.py` does not exist",
        "`no_such_function` occurs nowhere in the code",
        "`NO_SUCH_SETTING_X` occurs nowhere in the code",
        "tests/messaging/test_outbox.py::test_no_such_test is not a test function defined in tests/messaging/test_outbox.py",
        "`no_such_function` is not defined in paysys/messaging/consumption.py",
        "manage.py no_such_command is not a management command",
        "link missing.md points to nothing",
        "link page.md#nowhere: no heading #nowhere in page.md",
    ]


def test_slug_is_githubs_anchor():
    assert slug("Retention (`manage.py purge_history`)") == "retention-managepy-purge_history"
    assert (
        slug("Order polling: when the bank's notify is lost")
        == "order-polling-when-the-banks-notify-is-lost"
    )
