"""The benchmarks' results helper (benchmarks/reporting.py): header, file names, what the files hold."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def reporting():
    # benchmarks/ is a folder of scripts, not a package: load the module from its path.
    spec = importlib.util.spec_from_file_location("benchmarks_reporting", BENCHMARKS / "reporting.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_command_line_is_the_script_and_its_arguments(reporting):
    command = reporting.command_line("/any/where/benchmarks/scale.py", ["--items", "1000000", "--set", "a=b c"])
    assert command == "python benchmarks/scale.py --items 1000000 --set 'a=b c'"


def test_header_has_the_fixed_fields(reporting):
    header = reporting.results_header("scale.py", ["--items", "10"])
    assert list(header) == list(reporting.HEADER_KEYS)
    assert header["command"] == "python benchmarks/scale.py --items 10"
    assert dt.datetime.fromisoformat(header["date"]).tzinfo is not None
    assert header["machine"] and header["torch_version"] and header["python_version"]


def test_stem_names_benchmark_label_and_day_and_never_reuses_a_name(reporting, tmp_path):
    day = dt.date(2026, 11, 29)
    first = reporting.results_stem("serve_load", "dgn/full.v2", directory=tmp_path, day=day)
    assert first == tmp_path / "serve_load-dgn_full_v2-2026-11-29"
    reporting.sibling(first, ".png").write_bytes(b"")
    second = reporting.results_stem("serve_load", "dgn/full.v2", directory=tmp_path, day=day)
    assert second == tmp_path / "serve_load-dgn_full_v2-2026-11-29-2"


def test_written_files_carry_the_header(reporting, tmp_path):
    header = {key: f"<{key}>" for key in reporting.HEADER_KEYS}
    stem = reporting.resolve_stem(tmp_path / "sub" / "scale-1m-items-2026-11-29.json", "scale", "ignored")
    json_path, markdown_path = reporting.write_results(stem, header, {"rows": [1, 2]}, "A title", "| a |\n")
    assert json_path == tmp_path / "sub" / "scale-1m-items-2026-11-29.json"
    assert json.loads(json_path.read_text()) == {"header": header, "rows": [1, 2]}
    lines = markdown_path.read_text().splitlines()
    assert lines[:3] == ["# A title", "", "- command: `<command>`"]
    assert lines[2 : 2 + len(header)] == reporting.header_lines(header)
    assert lines[-1] == "| a |"
    assert sorted(path.name for path in stem.parent.iterdir()) == [json_path.name, markdown_path.name]


def test_payload_may_not_hide_the_header(reporting, tmp_path):
    with pytest.raises(ValueError):
        reporting.write_results(tmp_path / "x", {}, {"header": {}}, "t", "")
