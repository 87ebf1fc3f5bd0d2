"""The settings package keeps paysys's fixed values apart from the environment knobs: the
constants module reads no environment variable (a value there is tuned in code, never by an
operator), and every other module that does reads it by name (docs/operations.md lists them)."""

import ast
from pathlib import Path

import pytest

import paysys.settings

PACKAGE = Path(paysys.settings.__file__).parent


def imported_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module or "")
    return names


def test_the_constants_read_no_environment():
    names = imported_names(PACKAGE / "constants.py")

    assert "os" not in names and "paysys.settings.environment" not in names


def test_every_constant_is_a_setting_of_the_package():
    from paysys.settings import constants

    fixed = {name for name in vars(constants) if name.isupper()}

    assert fixed and all(
        getattr(paysys.settings, name) == getattr(constants, name) for name in fixed
    )


@pytest.mark.parametrize(
    "argv,level",
    [
        (["manage.py", "demo"], "WARNING"),
        (["/srv/paysys/manage.py", "create_merchant", "Shop"], "WARNING"),
        (["manage.py", "reconcile", "--strict"], "WARNING"),
        (["manage.py", "serve"], "INFO"),
        (["manage.py", "runstack", "--migrate"], "INFO"),
        (["/venv/bin/celery", "-A", "paysys", "worker", "-Q", "orders"], "INFO"),
        (["manage.py"], "INFO"),
    ],
)
def test_a_command_run_for_its_report_logs_warnings_and_the_servers_log_what_they_do(argv, level):
    """Without LOG_LEVEL: the services' INFO lines would interleave with a command's own report."""
    from paysys.settings.operations import _default_log_level

    assert _default_log_level(argv) == level
