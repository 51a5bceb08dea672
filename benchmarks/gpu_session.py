"""One GPU session: a validation-only sweep on diginetica, then the seed ablations (diginetica, yoochoose1_64,
amazon-scientific) with the configuration chosen on diginetica's VALIDATION split. Test is read only by the
ablation runs, once per validation-selected checkpoint.

The GPU machine has no polars, so the datasets travel as prepared folders (pyarrow only), made here with
``hiersrec data prepare --source srgnn|recbole -i ../shared/data/... --out .gpu_data/<name>``, and the MiniLM text
cache of amazon-scientific is computed here into ``.gpu_data/text_cache``. Run there as
``HIERSREC_COMMIT=<commit> python3 benchmarks/gpu_session.py`` with ``$OUT`` set; merge the results here with
``benchmarks/merge_runs.py``. Each stage's results are named as ``reporting.py`` names them
(``$OUT/r/hiersrec_ablation-diginetica-<date>.jsonl``, ...).
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from reporting import results_stem, sibling

OUT = Path(os.environ["OUT"]) / "r"
OUT.mkdir(parents=True, exist_ok=True)
T0 = time.time()
PY = sys.executable
BENCH = "benchmarks/hiersrec_accuracy.py"
env = dict(os.environ, PYTHONPATH="src:benchmarks", PYTHONUNBUFFERED="1")
stems = {
    "amazon": results_stem("hiersrec_text", "amazon-scientific", directory=OUT),
    "sweep": results_stem("hiersrec_sweep", "diginetica", directory=OUT),
    "diginetica": results_stem("hiersrec_ablation", "diginetica", directory=OUT),
    "yoochoose1_64": results_stem("hiersrec_ablation", "yoochoose1_64", directory=OUT),
}


def start(args, log):
    return subprocess.Popen([PY, BENCH, *args], env=env, stdout=open(OUT / log, "w"), stderr=subprocess.STDOUT)


def wait(procs, deadline):
    for p in procs:
        left = max(1, deadline - (time.time() - T0))
        try:
            p.wait(timeout=left)
        except subprocess.TimeoutExpired:
            p.kill()
            print("killed a stage at", round(time.time() - T0), flush=True)


common = ["--device", "cuda", "--threads", "1"]
# Amazon (small) runs beside everything else.
amazon = start(
    [
        "--dataset",
        ".gpu_data/amazon-scientific",
        "--preset",
        "amazon_scientific_hiersrec",
        "--seeds",
        "0,1,2",
        "--variants",
        "notext,hashed,minilm",
        "--breakdown",
        "--parallel",
        "3",
        "--set",
        "data.text_cache_dir=.gpu_data/text_cache",
        "--out",
        str(stems["amazon"]),
        *common,
    ],
    "amazon.log",
)

sweep = {
    "preset": "",
    "wide": "model.d_model=128,model.d_ff=512",
    "scaled": "model.score_scale=12",
    "wide_scaled": "model.d_model=128,model.d_ff=512,model.score_scale=12",
    "wide_drop3": "model.d_model=128,model.d_ff=512,model.dropout=0.3,model.input_dropout=0.3",
    "wide_lam1": "model.d_model=128,model.d_ff=512,model.category_loss_weight=1.0",
    "wide_lr1": "model.d_model=128,model.d_ff=512,train.lr=1e-3",
    "wide_bias": "model.d_model=128,model.d_ff=512,model.item_bias=true",
}
variants = ";".join(f"{name}:{spec}" for name, spec in sweep.items())
sw = start(
    [
        "--dataset",
        ".gpu_data/diginetica",
        "--preset",
        "diginetica_hiersrec",
        "--seeds",
        "0",
        "--variants",
        variants,
        "--valid-only",
        "--parallel",
        "8",
        "--set",
        "train.epochs=15",
        "--out",
        str(stems["sweep"]),
        *common,
    ],
    "sweep.log",
)
wait([sw], 230)
best, best_mrr = "", -1.0
sweep_runs = sibling(stems["sweep"], ".jsonl")
if sweep_runs.is_file():
    for line in sweep_runs.read_text().splitlines():
        r = json.loads(line)
        mrr = r["valid"].get("mrr@20", -1)
        print(
            "sweep",
            r["variant"],
            round(r["valid"].get("hr@20", 0) * 100, 2),
            round(mrr * 100, 2),
            "epochs",
            r["epochs_run"],
            "epoch_s",
            round(r["mean_epoch_seconds"], 1),
            flush=True,
        )
        if mrr > best_mrr:
            best, best_mrr = sweep[r["variant"]], mrr
print("chosen on validation:", repr(best), round(time.time() - T0), flush=True)
chosen = [x for s in best.split(",") if s for x in ("--set", s)]
dg = start(
    [
        "--dataset",
        ".gpu_data/diginetica",
        "--preset",
        "diginetica_hiersrec",
        "--seeds",
        "0,1,2",
        "--variants",
        "hierarchical,flat,single,hierarchical_nocat,single_nocat",
        "--parallel",
        "8",
        "--set",
        "train.epochs=15",
        *chosen,
        "--out",
        str(stems["diginetica"]),
        *common,
    ],
    "diginetica.log",
)
yc = start(
    [
        "--dataset",
        ".gpu_data/yoochoose1_64",
        "--preset",
        "yoochoose1_64_hiersrec",
        "--seeds",
        "0,1,2",
        "--variants",
        "hierarchical,flat,single",
        "--parallel",
        "5",
        "--set",
        "train.epochs=15",
        *chosen,
        "--out",
        str(stems["yoochoose1_64"]),
        *common,
    ],
    "yoochoose.log",
)
wait([dg, yc, amazon], 540)
print("done", round(time.time() - T0), flush=True)
