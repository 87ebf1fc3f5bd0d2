"""The settings package keeps paysys's fixed values apart from the environment knobs: the
constants module reads no environment variable (a value there is tuned in code, never by an
operator), and every other module that does reads it by name (docs/operations.md lists them)."""

import ast
from pathlib import Path

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
