"""Live progress of a long run (`voicepulse load`): one status block redrawn in place on a TTY,
plain periodic lines otherwise (CI, logs, pipes).

    with Progress(total_s=60) as p:
        while running:
            p.update(active_sessions=12, arrivals_per_s=4.0, ttfa_p50_ms=310, ttfa_p95_ms=520,
                     error_rate=0.004, sessions=240, send_lag_p99_ms=3.1, cpu_pct=41)
            time.sleep(1)

`update()` merges the figures it is given with the ones it already has and redraws when
`interval_s` has passed since the last draw (on a TTY) or `log_interval_s` (otherwise); it never
starts a thread, so it is safe under gevent. Colour is used only on a TTY and never when NO_COLOR
is set. Figures that are not given are shown as "-".

Known figures (all optional):
  active_sessions, sessions (started so far), arrivals_per_s, arrivals_due, arrivals_started,
  late_starts, ttfa_p50_ms, ttfa_p95_ms, error_rate (0..1), errors, send_lag_p99_ms, cpu_pct,
  users, warning (the caller's generator-health verdict, "" for healthy; when the key is absent
  one is derived from send_lag_p99_ms and cpu_pct against the thresholds given to the
  constructor). `voicepulse load` passes the collector's verdict, the one its summary prints.
Unknown figures are appended as `name value`.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from typing import Any, TextIO

_CSI = "\x1b["
_COLOURS = {"red": 31, "green": 32, "yellow": 33, "cyan": 36, "dim": 2, "bold": 1}
KNOWN = (
    "active_sessions", "sessions", "arrivals_per_s", "arrivals_due", "arrivals_started",
    "late_starts", "ttfa_p50_ms", "ttfa_p95_ms", "error_rate", "errors", "send_lag_p99_ms",
    "cpu_pct", "users", "warning",
)


def _is_tty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def clock_str(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = max(0, int(round(seconds)))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _num(v: Any, fmt: str = "{:.0f}", unit: str = "") -> str:
    if v is None:
        return "-"
    try:
        return fmt.format(v) + unit
    except (TypeError, ValueError):
        return str(v)


class Progress:
    """A live status block for a run of `total_s` seconds (None: open-ended)."""

    def __init__(
        self,
        total_s: float | None,
        stream: TextIO | None = None,
        interval_s: float = 1.0,
        *,
        title: str = "voicepulse load",
        log_interval_s: float | None = None,
        tty: bool | None = None,
        colour: bool | None = None,
        lag_warn_ms: float = 50.0,
        cpu_warn_pct: float = 85.0,
        clock=time.monotonic,
    ):
        self.stream = stream if stream is not None else sys.stdout
        self.total_s = total_s
        self.interval_s = float(interval_s)
        self.tty = _is_tty(self.stream) if tty is None else tty
        # plain lines are for logs: fewer of them, unless asked otherwise
        self.log_interval_s = float(log_interval_s if log_interval_s is not None
                                    else max(self.interval_s, 10.0))
        if colour is None:
            colour = self.tty and not os.environ.get("NO_COLOR")
        self.colour = bool(colour) and not os.environ.get("NO_COLOR")
        self.title = title
        self.lag_warn_ms = lag_warn_ms
        self.cpu_warn_pct = cpu_warn_pct
        self._clock = clock
        self._t0 = clock()
        self._last_draw: float | None = None
        self._drawn_lines = 0
        self._closed = False
        self.figures: dict[str, Any] = {}
        if self.tty:
            self._write(f"{_CSI}?25l")  # hide the cursor while the block is live

    # -- public API ------------------------------------------------------------------------
    def update(self, **figures: Any) -> None:
        """Merge `figures` and redraw if the interval has passed (the first call always draws)."""
        if self._closed:
            return
        self.figures.update(figures)
        now = self._clock()
        every = self.interval_s if self.tty else self.log_interval_s
        if self._last_draw is None or now - self._last_draw >= every:
            self.render(now)

    def log(self, line: str) -> None:
        """Print a line above the live block (a TTY) or between the plain lines."""
        if self.tty and self._drawn_lines:
            self._write(self._erase())
            self._drawn_lines = 0
            self._write(line + "\n")
            self._draw(self.block_lines(self._clock()))
        else:
            self._write(line + "\n")

    def render(self, now: float | None = None) -> None:
        """Draw now, whatever the interval."""
        now = self._clock() if now is None else now
        self._last_draw = now
        if self.tty:
            self._write(self._erase())
            self._draw(self.block_lines(now))
        else:
            self._write(self.plain_line(now) + "\n")

    def close(self, final: dict[str, Any] | None = None) -> None:
        """Draw the final state (left on screen) and restore the cursor. Idempotent."""
        if self._closed:
            return
        if final:
            self.figures.update(final)
        now = self._clock()
        if self.tty:
            self._write(self._erase())
            self._draw(self.block_lines(now, done=True))
            self._write(f"{_CSI}?25h")
        else:
            self._write(self.plain_line(now, done=True) + "\n")
        self._closed = True

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- what is shown ---------------------------------------------------------------------
    def elapsed(self, now: float | None = None) -> float:
        return (self._clock() if now is None else now) - self._t0

    def warning(self) -> str | None:
        f = self.figures
        if "warning" in f:  # the caller judged
            return str(f["warning"]) or None
        parts = []
        lag = f.get("send_lag_p99_ms")
        cpu = f.get("cpu_pct")
        if lag is not None and lag > self.lag_warn_ms:
            parts.append(f"send lag p99 {lag:.0f} ms > {self.lag_warn_ms:.0f} ms")
        if cpu is not None and cpu > self.cpu_warn_pct:
            parts.append(f"cpu {cpu:.0f} % > {self.cpu_warn_pct:.0f} %")
        if f.get("late_starts"):
            parts.append(f"{f['late_starts']} late starts")
        if not parts:
            return None
        return "generator overloaded: " + ", ".join(parts) + " (latencies may be distorted)"

    def _times(self, now: float, done: bool) -> tuple[str, str, float | None]:
        el = self.elapsed(now)
        if self.total_s:
            frac = min(1.0, el / self.total_s)
            return clock_str(el), clock_str(max(0.0, self.total_s - el)), frac
        return clock_str(el), "-", None

    def _arrivals(self) -> str:
        f = self.figures
        rate = _num(f.get("arrivals_per_s"), "{:.1f}", "/s")
        extra = []
        if f.get("arrivals_due") is not None:
            extra.append(f"due {f['arrivals_due']}")
        if f.get("arrivals_started") is not None:
            extra.append(f"started {f['arrivals_started']}")
        if f.get("late_starts") is not None:
            extra.append(f"late {f['late_starts']}")
        return rate + (f" ({', '.join(extra)})" if extra else "")

    def _errors(self) -> str:
        f = self.figures
        rate = f.get("error_rate")
        s = _num(None if rate is None else 100.0 * rate, "{:.1f}", " %")
        if f.get("errors") is not None:
            s += f" ({f['errors']})"
        return s

    def _extra(self) -> str:
        return "  ".join(f"{k} {v}" for k, v in self.figures.items() if k not in KNOWN)

    def block_lines(self, now: float, done: bool = False) -> list[str]:
        f = self.figures
        el, rem, frac = self._times(now, done)
        c = self._paint
        state = c("done", "green") if done else c("running", "cyan")
        head = f"{c(self.title, 'bold')}  {state}  elapsed {el}"
        if frac is not None:
            width = 20
            fill = int(round(frac * width))
            head += f"  left {rem}  [{'#' * fill}{'.' * (width - fill)}] {100 * frac:3.0f} %"
        rate = f.get("error_rate")
        err = self._errors()
        if rate:
            err = c(err, "red")
        lines = [
            head,
            f"  sessions  active {_num(f.get('active_sessions'))}   started "
            f"{_num(f.get('sessions'))}   users {_num(f.get('users'))}   arrivals {self._arrivals()}",
            f"  ttfa      p50 {_num(f.get('ttfa_p50_ms'), unit=' ms')}   "
            f"p95 {_num(f.get('ttfa_p95_ms'), unit=' ms')}   errors {err}",
            f"  generator send lag p99 {_num(f.get('send_lag_p99_ms'), '{:.1f}', ' ms')}   "
            f"cpu {_num(f.get('cpu_pct'), unit=' %')}",
        ]
        extra = self._extra()
        if extra:
            lines.append("  " + extra)
        w = self.warning()
        if w:
            lines.append(c("  ! " + w, "yellow"))
        return lines

    def plain_line(self, now: float, done: bool = False) -> str:
        f = self.figures
        el, rem, frac = self._times(now, done)
        when = f"{el}/{clock_str(self.total_s)}" if self.total_s else el
        parts = [
            f"[{self.title}] {'done' if done else 'progress'} {when}",
            f"active {_num(f.get('active_sessions'))}",
            f"started {_num(f.get('sessions'))}",
            f"arrivals {self._arrivals()}",
            f"ttfa p50 {_num(f.get('ttfa_p50_ms'), unit=' ms')} p95 "
            f"{_num(f.get('ttfa_p95_ms'), unit=' ms')}",
            f"errors {self._errors()}",
        ]
        extra = self._extra()
        if extra:
            parts.append(extra)
        w = self.warning()
        if w:
            parts.append("WARNING " + w)
        return "  ".join(parts)

    # -- drawing -----------------------------------------------------------------------------
    def _paint(self, text: str, colour: str) -> str:
        return f"{_CSI}{_COLOURS[colour]}m{text}{_CSI}0m" if self.colour else text

    def _erase(self) -> str:
        if not self._drawn_lines:
            return ""
        # up to the block's first line, then clear everything below
        return f"\r{_CSI}{self._drawn_lines}A{_CSI}J"

    def _draw(self, lines: list[str]) -> None:
        cols = self._columns()
        out = [_fit(line, cols) for line in lines]
        self._write("".join(f"{line}{_CSI}K\n" for line in out))
        self._drawn_lines = len(out)

    def _columns(self) -> int:
        try:
            return os.get_terminal_size(self.stream.fileno()).columns
        except (AttributeError, OSError, ValueError):
            return shutil.get_terminal_size().columns

    def _write(self, s: str) -> None:
        if not s:
            return
        try:
            self.stream.write(s)
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed pipe must not break the run it reports on


def follow_jsonl(path: str, progress: Progress, done, *, poll_s: float = 0.25,
                 timeout_s: float | None = None) -> int:
    """Feed `progress` from a JSON-lines status file that another process appends to (one
    object of figures per line, e.g. the Locust master of `voicepulse load`: loadtests may not
    import voicepulse, so it writes figures and the CLI draws them). Returns when `done()` is
    true (after reading what is left) or after `timeout_s`; the number of lines read."""
    import json

    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    pos, n, partial = 0, 0, ""
    while True:
        finished = done()
        try:
            with open(path, encoding="utf-8") as f:
                f.seek(pos)
                chunk = f.read()
                pos = f.tell()
        except FileNotFoundError:
            chunk = ""
        lines = (partial + chunk).split("\n")
        partial = lines.pop()
        for line in lines:
            if not line.strip():
                continue
            try:
                figures = json.loads(line)
            except ValueError:
                continue
            if isinstance(figures, dict):
                progress.update(**{str(k): v for k, v in figures.items()})
                n += 1
        if finished or (deadline is not None and time.monotonic() >= deadline):
            return n
        time.sleep(poll_s)


def _fit(line: str, cols: int) -> str:
    """Cut a line to the terminal width (escape codes don't count), so it never wraps and the
    block's height stays what the redraw expects."""
    if cols <= 1:
        return line
    out, visible, i = [], 0, 0
    limit = cols - 1
    while i < len(line):
        if line.startswith(_CSI, i):
            j = i + 2
            while j < len(line) and not line[j].isalpha():
                j += 1
            out.append(line[i:j + 1])
            i = j + 1
            continue
        if visible >= limit:
            i += 1
            continue
        out.append(line[i])
        visible += 1
        i += 1
    return "".join(out)
