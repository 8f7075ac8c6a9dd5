"""The ``memorybench`` command line (Typer + rich).

Each command parses its options and calls the library; the work itself lives in the modules
(``tasks``, ``storage``, ``preview``, ...). User errors (``MemorybenchError``) are printed without a
traceback and exit with code 2.

One module per group of commands: ``run`` (run, merge, score, summarize), ``show``, ``report``
(leaderboard, plot, compare, cite, report), ``validity``, ``train``, ``profile``, ``tasks``,
``models`` and ``weights``; ``common`` holds the app, the shared options and the error reporting.
"""

from __future__ import annotations

import sys
from typing import Optional

from ..console import err_console
from ..errors import MemorybenchError
from .common import _ARGV, _report, app

# isort: off
# the commands register in this order, the order of `memorybench --help`
from . import run, show, report, validity, train, profile  # noqa: F401
from . import tasks, models, weights  # noqa: F401

# isort: on

__all__ = ["app", "main"]


def main(argv: Optional[list[str]] = None) -> int:
    """Console-script entry point: run the app, turning user errors into exit code 2."""
    _ARGV[:] = sys.argv[1:] if argv is None else argv
    try:
        app(args=argv, prog_name="memorybench")
    except MemorybenchError as e:
        _report(e, str(e))
        return e.exit_code
    except OSError as e:  # a file that cannot be written or read: disk full, permissions, a file for a directory
        _report(e, f"{e} ({type(e).__name__})")
        return 1
    except SystemExit as e:  # click exits by itself (0 after --help, 2 on a usage error)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    return 0
