"""How every benchmark writes its results: one provenance header, one naming scheme, atomic writes.

A result is a pair of files, ``benchmarks/results/<benchmark>-<label>-<YYYY-MM-DD>.json`` and ``.md``, where
``<label>`` names what was measured (a dataset, a run directory, a catalogue size). When that name is taken
(a second run on the same day), ``-2``, ``-3``, ... is appended: a new run never replaces a committed result,
which README links may point at. The .json carries the header as its ``"header"`` object; the .md starts with
a title and the same header as bullet lines. Both are written atomically (temporary file, rename), so a run cut
short leaves the previous file or the complete new one, never half of one.

    header = results_header(__file__, argv)           # command as run, commit, machine, date, versions
    stem = results_stem("scale", "1m-items")          # benchmarks/results/scale-1m-items-2026-11-29
    write_results(stem, header, payload, "Category candidates at scale", markdown_body)

``hiersrec`` is imported only when a header is made or a file written, so that a script can name its files
on a machine where only its child processes see the package.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
HEADER_KEYS = ("command", "commit", "machine", "date", "torch_version", "python_version", "hiersrec_version")
RESULT_SUFFIXES = (".json", ".md")


def command_line(script: str | Path, argv: list[str] | None = None) -> str:
    """The command as a user would type it again: ``python benchmarks/<script>.py <arguments>``.

    ``argv`` is the argument list the script's ``main`` received (``None``: ``sys.argv[1:]``); the
    interpreter's own path is left out because it names one machine's virtual environment.
    """
    arguments = sys.argv[1:] if argv is None else list(argv)
    return shlex.join(["python", f"benchmarks/{Path(script).name}", *arguments])


def results_header(script: str | Path, argv: list[str] | None = None) -> dict[str, Any]:
    """Command, commit, machine, date and versions of this run, in ``HEADER_KEYS`` order."""
    from hiersrec.provenance import provenance

    values = {
        "command": command_line(script, argv),
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        **provenance(),
    }
    return {key: values[key] for key in HEADER_KEYS}


def header_lines(values: Mapping[str, Any]) -> list[str]:
    """Markdown bullet lines of a header (or of any flat mapping); commands in code spans."""
    return [
        f"- {key}: `{value}`" if key.endswith(("command", "commands")) else f"- {key}: {value}"
        for key, value in values.items()
    ]


def paired_cells(comparison: Mapping[str, Any], k: int = 20) -> str:
    """Markdown cells of a paired test (`hiersrec.eval.significance.compare`), in %:
    ``MRR@k diff | 99% CI | HR@k diff | 99% CI | Wilcoxon p``."""
    mrr, hr = comparison[f"mrr@{k}"], comparison[f"hr@{k}"]
    return (
        f"{100 * mrr['difference']:+.2f} | {100 * mrr['ci'][0]:+.2f} .. {100 * mrr['ci'][1]:+.2f} | "
        f"{100 * hr['difference']:+.2f} | {100 * hr['ci'][0]:+.2f} .. {100 * hr['ci'][1]:+.2f} | "
        f"{comparison['wilcoxon_p']:.2g}"
    )


def interval_cells(comparison: Mapping[str, Any], k: int = 20) -> str:
    """Markdown cells of a paired test, in %: ``MRR@k diff (99% CI) | HR@k diff (99% CI)``."""
    return " | ".join(
        f"{100 * c['difference']:+.2f} ({100 * c['ci'][0]:+.2f}, {100 * c['ci'][1]:+.2f})"
        for c in (comparison[f"mrr@{k}"], comparison[f"hr@{k}"])
    )


def results_stem(benchmark: str, label: str, *, directory: Path = RESULTS, day: dt.date | None = None) -> Path:
    """``directory/<benchmark>-<label>-<YYYY-MM-DD>``, with ``-2``, ``-3``, ... when files of that stem exist.

    Characters other than letters, digits, ``_`` and ``-`` in the label become ``_`` (a dot would read as a
    suffix, a slash as a folder).
    """
    base = f"{benchmark}-{re.sub(r'[^A-Za-z0-9_-]', '_', label)}-{(day or dt.date.today()).isoformat()}"
    stem, copy = directory / base, 1
    while _taken(stem):
        copy += 1
        stem = directory / f"{base}-{copy}"
    return stem


def count_label(count: int) -> str:
    """A count as a file-name label: ``1m`` for 1,000,000, ``500k`` for 500,000, else the number."""
    for unit, size in (("m", 1_000_000), ("k", 1_000)):
        if count and count % size == 0:
            return f"{count // size}{unit}"
    return str(count)


def _taken(stem: Path) -> bool:
    # Any file of this stem counts (.json, .md, .png, .jsonl): all of them belong to one run.
    return stem.parent.is_dir() and any(path.name.startswith(stem.name + ".") for path in stem.parent.iterdir())


def resolve_stem(out: Path | None, benchmark: str, label: str) -> Path:
    """The stem a script writes to: ``--out`` as given (less a .json/.md suffix), else ``results_stem``."""
    stem = out if out is not None else results_stem(benchmark, label)
    if stem.suffix in RESULT_SUFFIXES:
        stem = stem.with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    return stem


def sibling(stem: Path, suffix: str) -> Path:
    """``stem`` plus ``suffix`` (``Path.with_suffix`` would cut a label at its last dot)."""
    return stem.with_name(stem.name + suffix)


def render_markdown(title: str, header: Mapping[str, Any], body: str) -> str:
    """A results page: the title, the header lines, then the benchmark's own text."""
    return "\n".join([f"# {title}", "", *header_lines(header), "", body.strip("\n"), ""])


def write_results(
    stem: Path, header: Mapping[str, Any], payload: Mapping[str, Any], title: str, body: str
) -> tuple[Path, Path]:
    """Write ``<stem>.json`` (``{"header": ..., **payload}``) and ``<stem>.md`` atomically; return both paths."""
    from hiersrec.files import write_bytes_atomic

    if "header" in payload:
        raise ValueError("the payload has its own 'header' key; the header is passed separately")
    json_path, markdown_path = sibling(stem, ".json"), sibling(stem, ".md")
    # default=str: a run of hours must not be lost at its very end to a Path left in the payload.
    document = json.dumps({"header": dict(header), **payload}, indent=2, default=str) + "\n"
    write_bytes_atomic(json_path, document.encode())
    write_bytes_atomic(markdown_path, render_markdown(title, header, body).encode())
    return json_path, markdown_path


def write_figure(figure: Any, path: Path, dpi: int = 110) -> None:
    """Save a matplotlib figure as PNG atomically (the temporary name has no .png, hence ``format``)."""
    from hiersrec.files import write_with_atomic

    write_with_atomic(path, lambda partial: figure.savefig(partial, dpi=dpi, format="png"))
