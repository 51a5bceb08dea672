"""The README's results tables are the ones benchmarks/readme_tables.py makes from the committed results files."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def readme_tables():
    # benchmarks/ is a folder of scripts, not a package: load the script from its path.
    spec = importlib.util.spec_from_file_location("benchmarks_readme_tables", REPO / "benchmarks" / "readme_tables.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_committed_readme_tables_are_current(readme_tables, capsys):
    status = readme_tables.main(["--check"])
    assert status == 0, "README results tables are stale:\n" + capsys.readouterr().err


def test_a_stale_table_is_reported_and_rewritten_between_its_markers_only(readme_tables, tmp_path, capsys):
    readme = tmp_path / "README.md"
    original = (REPO / "README.md").read_text()
    assert "| **VSTAN** | **52.15** |" in original
    readme.write_text(original.replace("| **VSTAN** | **52.15** |", "| **VSTAN** | **99.99** |"))
    assert readme_tables.main(["--check", "--readme", str(readme)]) == 1
    assert "99.99" in capsys.readouterr().err
    assert readme_tables.main(["--readme", str(readme)]) == 0
    assert readme.read_text() == original


def test_tables_follow_the_results_files(readme_tables, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    text = results / readme_tables.TEXT_ABLATION
    shutil.copy(REPO / "benchmarks" / "results" / readme_tables.TEXT_ABLATION, text)
    text.write_text(text.read_text().replace('"mean": 0.10649', '"mean": 0.20649', 1))
    table = readme_tables.text_table(results)
    assert "**20.65 ± 0.39**" in table


def test_unmarked_tables_are_an_error(readme_tables):
    with pytest.raises(SystemExit, match="no markers"):
        readme_tables.regenerate("no tables here\n", REPO / "benchmarks" / "results")
