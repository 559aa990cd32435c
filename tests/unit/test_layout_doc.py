"""docs/development.md's layout table names exactly the modules there are; modules stay small."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "sandtrap"
DOC = ROOT / "docs" / "development.md"
# STYLE.md: aim for 400 lines, stay under about 600; this is the bound we hold ourselves to.
MAX_LINES = 450
# A standalone script copied whole into a sandbox (`python3 -c <source>`), so it cannot import a
# sibling module.
SINGLE_FILE_SCRIPTS = {"verify/probe.py"}


def _modules() -> set[str]:
    return {
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path.name not in ("__init__.py", "__main__.py")
    }


def _documented() -> set[str]:
    text = DOC.read_text(encoding="utf-8")
    return set(re.findall(r"^\| `([a-z_/]+\.py)` \| [^|]+\.", text, flags=re.MULTILINE))


def test_layout_table_lists_every_module_once() -> None:
    documented = _documented()
    modules = _modules()
    assert sorted(modules - documented) == [], "modules missing from docs/development.md"
    assert sorted(documented - modules) == [], "docs/development.md names modules that are gone"


def test_modules_stay_small() -> None:
    too_long = {
        name: lines
        for name in _modules() - SINGLE_FILE_SCRIPTS
        if (lines := len((PACKAGE / name).read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert too_long == {}, f"split these modules (limit {MAX_LINES} lines)"
