"""The README stays true: its settings table is the Settings dataclass, its commands exist."""

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_settings_table_matches_the_settings_dataclass():
    spec = importlib.util.spec_from_file_location("settings_table", ROOT / "scripts" / "settings_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    block = re.search(r"<!-- settings:start -->\n(.*?)\n<!-- settings:end -->", README, re.S).group(1)
    assert block == module.table(), "README settings table is stale: paste `python scripts/settings_table.py`"


def test_make_targets_named_in_the_readme_exist():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.M))
    for target in set(re.findall(r"make ([a-z][a-z-]*)", README)):
        assert target in targets, f"README names `make {target}` but the Makefile has no such target"


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
