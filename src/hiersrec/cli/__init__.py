"""The ``hiersrec`` command line: one typer app, one file per command group, exit codes in one place.

Commands stay thin: parse options, call the library, print. Library errors become a one-line message on
stderr and an exit code chosen by the error's class (`ExitStatus`); ``--traceback`` shows the full stack.
Unexpected exceptions always show their traceback.
"""

from __future__ import annotations

import enum
import logging
import sys

import typer

from hiersrec.cli import data, evaluate, quickstart, recommend, serve, train
from hiersrec.errors import (
    ArtifactError,
    ConfigError,
    DataError,
    HierSRecError,
    NotFittedError,
    TrainingDivergedError,
)


class ExitStatus(enum.IntEnum):
    """Process exit codes by kind of error."""

    OK = 0
    ERROR = 1  # an unexpected error (a bug): the traceback is shown
    USAGE = 2  # bad command-line usage (typer/click's own code)
    DATA_ERROR = 3
    CONFIG_ERROR = 4
    ARTIFACT_ERROR = 5
    TRAINING_DIVERGED = 6
    NOT_FITTED = 7


_EXIT_BY_ERROR: tuple[tuple[type[HierSRecError], ExitStatus], ...] = (
    (DataError, ExitStatus.DATA_ERROR),
    (ConfigError, ExitStatus.CONFIG_ERROR),
    (ArtifactError, ExitStatus.ARTIFACT_ERROR),
    (TrainingDivergedError, ExitStatus.TRAINING_DIVERGED),
    (NotFittedError, ExitStatus.NOT_FITTED),
)

app = typer.Typer(
    name="hiersrec",
    help="Session-based recommendation: prepare data, train HierSRec and baselines, evaluate, recommend, serve.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
_state = {"traceback": False}


@app.callback()
def _global_options(
    traceback: bool = typer.Option(False, "--traceback", help="Show the full traceback of errors."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details to stderr."),
) -> None:
    _state["traceback"] = traceback
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def exit_status_for(error: HierSRecError) -> ExitStatus:
    """The exit code of a library error."""
    for error_class, status in _EXIT_BY_ERROR:
        if isinstance(error, error_class):
            return status
    return ExitStatus.ERROR


def _register_commands() -> None:
    app.add_typer(data.app, name="data")
    app.command(name="evaluate")(evaluate.evaluate)
    app.command(name="fuse")(train.fuse)
    app.command(name="quickstart")(quickstart.quickstart)
    app.command(name="recommend")(recommend.recommend)
    app.command(name="refit")(train.refit)
    app.command(name="serve")(serve.serve)
    app.command(name="train")(train.train)


_register_commands()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``hiersrec`` console script.

    Usage errors, ``--help`` and Ctrl-C are handled by typer's standalone mode (exit 2, 0, 1); library errors
    become one line on stderr and their `ExitStatus`.
    """
    try:
        app(args=argv, prog_name="hiersrec")
    except HierSRecError as error:
        if _state["traceback"]:
            raise
        typer.echo(f"error: {error}", err=True)
        sys.exit(exit_status_for(error))
