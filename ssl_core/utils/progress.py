"""Progress bars that also read well in a log file.

In a terminal, a normal tqdm bar. Inside a job (``SSLOPS_PROGRESS=lines``, set by the launcher,
whose job output goes to a log that is streamed line by line), tqdm's carriage-return redraws
would pile up into one endless line; there each update is a whole line, at most one every
``SSLOPS_PROGRESS_INTERVAL`` seconds (default 15).
"""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO

from tqdm import tqdm

PROGRESS_ENV = "SSLOPS_PROGRESS"
INTERVAL_ENV = "SSLOPS_PROGRESS_INTERVAL"


class _Lines:
    """A file-like that turns tqdm's ``\\r`` redraws into separate lines."""

    def __init__(self, stream: TextIO):
        self.stream, self.last = stream, ""

    def write(self, s: str) -> int:
        for line in s.replace("\r", "\n").split("\n"):
            line = line.rstrip()
            if line and line != self.last:  # close() redraws the last state once more
                self.stream.write(line + "\n")
                self.last = line
        return len(s)

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(iterable: Any = None, *, enabled: bool = True, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, disable=not enabled, **kwargs)``, in line mode inside a job."""
    if enabled and os.environ.get(PROGRESS_ENV) == "lines":
        interval = float(os.environ.get(INTERVAL_ENV, "15"))
        kwargs.update(
            file=_Lines(sys.stderr),
            mininterval=interval,
            maxinterval=interval,  # tqdm's monitor thread would force a redraw every 10 s
            bar_format="{l_bar}{r_bar}",  # no bar glyphs in a log line
        )
    return tqdm(iterable, disable=not enabled, **kwargs)
