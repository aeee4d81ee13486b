"""The ``calibtune`` command line: thin commands over the library functions.

This module is the command table (the Typer ``app``, its ``calibrate`` group and the one error path);
the commands are in :mod:`.metrics` (scored files) and :mod:`.run` (commands that load a model), their
option vocabulary in :mod:`.options`.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from typer.core import TyperGroup

try:  # typer >= 0.20 vendors click
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover
    from click import exceptions as click_errors

from .. import __version__
from ..errors import USER_ERRORS, describe
from .console import error_line, notices_to_stderr
from .metrics import calibrate_apply_cmd, calibrate_fit_cmd, metrics_cmd
from .run import compare_cmd, eval_cmd, probe_cmd, train_cmd

__all__ = ["CalibtuneGroup", "app", "calibrate_app", "main"]


class CalibtuneGroup(TyperGroup):
    """The one error path: a failure the user caused is one ``error:`` line and exit 2, never a traceback.

    A bad flag or value (click's usage errors) and every exception in :data:`~calibtune.errors.USER_ERRORS`
    become ``error: <message>``; any other exception is a bug and exits 1 with a hint. ``--debug``
    (anywhere on the command line) or ``CALIBTUNE_DEBUG=1`` shows the traceback instead.
    """

    debug = False

    def main(self, args=None, *rest, **kwargs):  # noqa: ANN001 (click's signature)
        args = list(sys.argv[1:] if args is None else args)
        # a class attribute, so the sub-groups (calibrate) see it too
        CalibtuneGroup.debug = "--debug" in args or os.environ.get("CALIBTUNE_DEBUG", "") not in ("", "0")
        return super().main([a for a in args if a != "--debug"], *rest, **kwargs)

    def invoke(self, ctx):  # noqa: ANN001
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, click_errors.NoArgsIsHelpError, BrokenPipeError):
            raise  # BrokenPipeError (`| head`): typer exits quietly
        except click_errors.UsageError as e:
            if self.debug:
                raise
            command = e.ctx.command_path if e.ctx is not None else "calibtune"
            error_line(f"{e.format_message()} (see: {command} --help)")
            raise typer.Exit(code=2) from None
        except click_errors.ClickException:
            raise
        except USER_ERRORS as e:
            if self.debug:
                raise
            error_line(describe(e))
            raise typer.Exit(code=2) from None
        except Exception as e:
            if self.debug:
                raise
            error_line(f"internal error, please report it: {type(e).__name__}: {describe(e)} "
                       "(run again with --debug for the traceback)")
            raise typer.Exit(code=1) from None


app = typer.Typer(cls=CalibtuneGroup, add_completion=False, no_args_is_help=True,
                  help="calibtune: measure and fix the calibration of fine-tuned LLMs.")
app.command("metrics")(metrics_cmd)
app.command("eval")(eval_cmd)
app.command("probe")(probe_cmd)
app.command("train")(train_cmd)
app.command("compare")(compare_cmd)

calibrate_app = typer.Typer(cls=CalibtuneGroup, no_args_is_help=True,
                            help="Temperature scaling of scored files: fit on a held-out file, apply to another.")
app.add_typer(calibrate_app, name="calibrate")
calibrate_app.command("fit")(calibrate_fit_cmd)
calibrate_app.command("apply")(calibrate_apply_cmd)


def _version(value: bool) -> None:
    if value:
        print(f"calibtune {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of a failure (also anywhere on the line, "
                                                        "or CALIBTUNE_DEBUG=1).")] = False,
) -> None:
    """calibtune: measure and fix the calibration of fine-tuned LLMs."""
    notices_to_stderr()
