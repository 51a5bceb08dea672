import json

import pytest

from hiersrec.cli import main


@pytest.mark.slow
def test_quickstart_runs_every_model_end_to_end(tmp_path, capsys):
    out = tmp_path / "quickstart"
    with pytest.raises(SystemExit) as exited:
        main(["quickstart", "--out", str(out), "--sessions", "600", "--set", "train.epochs=1"])
    captured = capsys.readouterr()
    assert exited.value.code == 0, captured.err
    results = json.loads((out / "results.json").read_text())["results"]
    assert {"pop", "sr", "vstan", "last_category", "hiersrec"} <= set(results)
    assert results["hiersrec"]["protocol"] == "all_prefixes"
    assert 0.0 < results["hiersrec"]["metrics"]["hr@20"] <= 1.0
    assert "hiersrec" in captured.out and "hr@20" in captured.out
    assert (out / "hiersrec" / "weights.pt").is_file() and (out / "hiersrec" / "meta.json").is_file()
