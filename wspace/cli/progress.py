"""One-line progress reports on stderr: rate and ETA, redrawn in place on a terminal."""

from __future__ import annotations

import sys
import time

import click


def _fmt_seconds(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60:d}:{seconds % 60:02d}"


class ProgressLine:
    """``update(done, total, unit, extra)`` at most every ``interval`` seconds; ``close()`` ends the line."""

    def __init__(self, label: str, interval: float = 0.5):
        self.label, self.interval = label, interval
        self.tty = sys.stderr.isatty()
        self.start = time.perf_counter()
        self._last = 0.0
        self._shown = False

    def update(self, done: float, total: float, unit: str, extra: str = "", force: bool = False,
               elapsed: float | None = None) -> None:
        """``elapsed``: seconds of the work itself when the caller knows them better (resumed work)."""
        now = time.perf_counter()
        if not force and now - self._last < (self.interval if self.tty else 10.0) and done < total:
            return
        self._last = now
        elapsed = now - self.start if elapsed is None else elapsed
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else float("nan")
        pct = 100.0 * done / total if total else 100.0
        eta_text = _fmt_seconds(eta) if eta == eta else "?"
        line = (f"{self.label}: {pct:5.1f}% {done:,.0f}/{total:,.0f} {unit} "
                f"[{_fmt_seconds(elapsed)}<{eta_text}, {rate:,.1f} {unit}/s]{extra}")
        click.echo(("\r" + line.ljust(100)) if self.tty else line, err=True, nl=not self.tty)
        self._shown = True

    def close(self) -> None:
        if self._shown and self.tty:
            click.echo("", err=True)
