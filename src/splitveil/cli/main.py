"""The ``splitveil`` application: every command group registered on one Typer app, and the entry point
that turns every refusal into one line."""

from __future__ import annotations

import sys
from typing import Protocol, cast

import typer
from rich.console import Console
from rich.markup import escape

from splitveil.cli import audit, bench, models, plan, serve, tune
from splitveil.errors import SplitveilError

app = typer.Typer(
    name="splitveil",
    help="Split a model, attack the split as a curious cloud would, defend it, and measure the cost.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


for command in (models.models, models.profile, models.datasets, models.train, plan.plan, tune.tune, audit.attack):
    app.command()(command)
for serve_command in (serve.export, serve.serve, serve.infer):
    app.command()(serve_command)
app.add_typer(bench.bench_app, name="bench")


def main(argv: list[str] | None = None) -> None:
    """Entry point: every refusal is one red ``error:`` line on stderr and exit code 2, never a traceback.

    Click's usage errors (a bad option value, a missing argument) are printed the same way, in place
    of its usage header and boxed message, so that people and scripts read one shape of refusal.
    """
    code = 0
    try:
        code = app(args=argv, prog_name="splitveil", standalone_mode=False)
    except _click_class("UsageError") as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":
            sys.exit(2)  # typer printed the help as it raised this; nothing was refused
        ctx = getattr(exc, "ctx", None)
        message = cast(_ClickError, exc).format_message()
        _refuse(message + (f" (see `{ctx.command_path} --help`)" if ctx is not None else ""))
    except _click_class("ClickException") as exc:
        error = cast(_ClickError, exc)
        _refuse(error.format_message(), error.exit_code)
    except typer.Abort:
        _refuse("aborted", 1)
    except SplitveilError as exc:
        _refuse(str(exc))
    except ModuleNotFoundError as exc:
        extra = _EXTRA_OF_MODULE.get((exc.name or "").split(".")[0])
        if extra is None:  # not one of ours to install: a bug to see in full
            raise
        _refuse(f"this command needs {exc.name}, which this install lacks: pip install 'splitveil[{extra}]'")
    except OSError as exc:
        if exc.filename is None:  # not about a path the user gave: a bug to see in full
            raise
        _refuse(f"{exc.filename}: {exc.strerror or exc}; check the path and its permissions")
    sys.exit(code if isinstance(code, int) else 0)


#: The extra that installs each third-party module a command may import (a device with only
#: ``splitveil[edge]`` has none of the toolkit's).
_EXTRA_OF_MODULE = {
    **dict.fromkeys(
        [
            "torch",
            "pydantic",
            "yaml",
            "safetensors",
            "skimage",
            "torchmetrics",
            "matplotlib",
            "jinja2",
            "torch_pruning",
        ],
        "torch",
    ),
    **dict.fromkeys(["fastapi", "uvicorn", "prometheus_client", "httptools"], "serve"),
    **dict.fromkeys(["onnxruntime", "httpx", "zstandard", "imageio"], "edge"),
    **dict.fromkeys(["onnx", "onnxscript"], "onnx"),
    "ray": "ray",
    "optuna": "tune",
}


class _ClickError(Protocol):
    """What every exception of click's (whichever copy typer carries) offers."""

    exit_code: int

    def format_message(self) -> str: ...


def _click_class(name: str) -> type[Exception]:
    """Click's exception class ``name`` as typer raises it: recent typer releases carry their own copy
    of click, so ``import click`` may name other classes. ``typer.BadParameter`` derives from both."""
    return next(base for base in typer.BadParameter.__mro__ if base.__name__ == name)


def _refuse(message: str, code: int = 2) -> None:
    # One line whatever the message holds: newlines are folded, and brackets are text, not rich markup.
    line = escape(" ".join(message.split()))
    Console(stderr=True).print(f"[red]error:[/red] {line}", highlight=False, soft_wrap=True)
    sys.exit(code)
