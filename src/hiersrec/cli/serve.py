"""``hiersrec serve``: the HTTP service for one trained run (FastAPI + uvicorn, the optional ``serve`` extra)."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Annotated

import torch
import typer

from hiersrec.errors import ConfigError
from hiersrec.recommend import Recommender


def serve(
    run: Annotated[Path, typer.Argument(help="A trained run directory.")],
    host: Annotated[str, typer.Option(help="Interface to bind; 0.0.0.0 exposes the service to the network.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    log_level: Annotated[str, typer.Option(help="uvicorn log level: critical, error, warning, info, debug.")] = (
        "info"
    ),
    threads: Annotated[
        int, typer.Option(min=0, help="torch threads per request (0 = torch's default); 1 suits many clients.")
    ] = 0,
    batch_wait_ms: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Longest wait for the clients of the previous model call to come back and share the next one "
            "(0: never wait; a lone client is never delayed).",
        ),
    ] = 2.0,
    model_thread: Annotated[
        bool,
        typer.Option(
            help="Score in a worker thread, so that requests are read meanwhile (for machines with cores to spare); "
            "by default scoring runs in the event loop, faster when clients share the cores.",
        ),
    ] = False,
) -> None:
    """Serve RUN over HTTP: POST /recommend, GET /health, GET /model; OpenAPI docs at /docs."""
    try:
        import uvicorn

        from hiersrec.serve.app import create_app
    except ImportError as error:
        raise ConfigError(f"hiersrec serve needs the 'serve' extra ({error}); pip install 'hiersrec[serve]'") from None
    if threads:
        torch.set_num_threads(threads)

    # Loaded here, before the server starts, so that a bad run directory is a one-line error with its exit code.
    app = create_app(Recommender.from_artifact(run), batch_wait=batch_wait_ms / 1000.0, model_thread=model_thread)
    # The objects alive now (the imported torch, FastAPI and pydantic, the loaded run: some 200k) live as long as
    # the process. Left to the cyclic garbage collector, each full collection walks them all, stalling every
    # request in flight (the 32-client p99 of benchmarks/results/serve_load-dgn-full-2026-11-29.md); frozen, they
    # are never walked again.
    gc.collect()
    gc.freeze()
    uvicorn.run(app, host=host, port=port, log_level=log_level)
