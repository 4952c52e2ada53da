"""``python -m mitk`` and the ``mitk`` command: stop cleanly on SIGINT/SIGTERM from the first instruction on.

Importing the command line takes a moment (Typer, click, the task table). A signal that arrives meanwhile gives the
same line and exit status (130 for SIGINT, 143 for SIGTERM) as one that arrives while a command runs; from
:func:`mitk.cli.main` on, the command's own handling takes over.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType


def _stop_while_starting(signum: int, frame: FrameType | None) -> None:
    sys.stderr.write(f"mitk: interrupted ({signal.Signals(signum).name}) while starting\n")
    raise SystemExit(128 + signum)


def main() -> None:
    """Catch SIGINT/SIGTERM (unless ignored, as a shell's background jobs ignore SIGINT), then run the CLI."""
    for number in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(number) is not signal.SIG_IGN:
            signal.signal(number, _stop_while_starting)
    from mitk.serve.client import delegate

    code = delegate(sys.argv[1:])  # MITK_SERVE=1 and a warm worker running: the call runs there
    if code is not None:
        raise SystemExit(code)
    from mitk.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
