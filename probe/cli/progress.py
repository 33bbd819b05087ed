"""How a run talks to the person running it: a rich progress bar on a terminal, plain
lines when piped, JSON lines for automation (--json).

Each finished measurement is labelled with what it will most likely be called
(``analysis.hints.RunningHint``: the classifier, run on it as it finishes), so that the
lines agree with the summary at the end. The rate and the time left come from a moving
window of this session's own completions (``Eta``): a resumed run does not count what
an earlier session measured as done in no time, and the last, slow sites do not freeze
the estimate at a few seconds.
"""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import TextIO

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Column
from rich.text import Text

from probe.core.i18n import N_, _
from probe.core.records import Measurement, utcnow
from probe.measure.runner import RunSummary

Hint = Callable[[Measurement], str]  # -> one of analysis.hints.HINTS

# How a progress line marks a measurement, by hint (ok: no mark).
MARKS = {"blocked": N_("BLOCKED"), "cant_tell": N_("can't tell"), "down": N_("down"), "error": N_("error")}


class Eta:
    """Rate and time left from the last ``window`` completions of this session.

    Why not rich's own: its speed counts the completed count it was started with (a
    resumed run showed 80/s at once), and its estimate only moves when a measurement
    finishes (it sat at 0:00:02 for 47 s while the last, slow site was measured). Here
    the estimate counts down between completions, and when the sites left are all in
    flight and overdue it says so instead of a number."""

    def __init__(self, window: int = 40, clock: Callable[[], float] = time.monotonic):
        self.times: deque[float] = deque(maxlen=window)
        self.clock = clock
        self.started = clock()

    def done(self) -> None:
        self.times.append(self.clock())

    def rate(self) -> float | None:
        """Measurements per second over the window (None until there is one)."""
        if not self.times:
            return None
        first = self.times[0] if len(self.times) > 1 else self.started
        span = self.times[-1] - first
        n = len(self.times) - 1 if len(self.times) > 1 else 1
        return n / span if span > 0 else None

    def left(self, remaining: int) -> float | None:
        """Seconds left, counting down since the last completion; 0 when the estimate
        has run out while sites are still being measured (say "finishing"), None while
        unknown."""
        if remaining <= 0:
            return 0.0
        rate = self.rate()
        if rate is None:
            return None
        since = self.clock() - (self.times[-1] if self.times else self.started)
        return max(0.0, remaining / rate - since)


def eta_words(eta: Eta, remaining: int) -> str:
    left = eta.left(remaining)
    if remaining <= 0:
        return ""
    if left is None:
        return _("time left: estimating")
    if left < 1:
        return _("finishing the last {n}").format(n=remaining)
    minutes, seconds = divmod(int(left + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return _("time left: {time}").format(time=f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}")


def short_failures(m: Measurement) -> str:
    """'dns=dns_nxdomain tcp=ok tls=- http=200' — one glance at each step."""

    def step(records, ok) -> str:
        if not records:
            return "-"
        fails = sorted({r.failure for r in records if r.failure})
        return "ok" if any(ok(r) for r in records) else (",".join(fails) or "fail")

    dns = step(m.dns, lambda q: q.failure is None)
    tcp = step(m.tcp, lambda c: c.success)
    tls = step([t for t in m.tls if t.sni_role == "target"], lambda t: t.success)
    main = [h for h in m.http if h.kind == "main"]
    http = "-" if not main else (str(main[-1].status) if main[-1].status else (main[-1].failure or "fail"))
    return f"dns={dns} tcp={tcp} tls={tls} http={http}"


class PlainReporter:
    """One line per URL, for logs and pipes."""

    def __init__(self, hint: Hint, out: TextIO = sys.stderr, verbosity: int = 0):
        self.hint, self.out, self.verbosity = hint, out, verbosity
        self.total = self.done = self.anomalies = self.unclear = 0
        self.eta = Eta()

    def _count(self, m: Measurement) -> str:
        self.done += 1
        self.eta.done()
        word = self.hint(m)
        self.anomalies += word == "blocked"
        self.unclear += word == "cant_tell"
        return word

    def started(self, total: int, already_done: int) -> None:
        self.total, self.done = total, already_done
        if self.verbosity >= 0:
            print(_("measuring {n} of {total} targets").format(n=total - already_done, total=total), file=self.out,
                  flush=True)

    def measured(self, m: Measurement) -> None:
        word = self._count(m)
        if self.verbosity < 0:
            return
        mark = _(MARKS[word]) + " " if word in MARKS else ""
        print(
            f"[{self.done}/{self.total}] {mark}{m.url} {short_failures(m)} ({(m.duration_ms or 0)/1000:.1f}s)",
            file=self.out,
            flush=True,
        )

    def cancelled(self, url: str) -> None:
        if self.verbosity >= 0:
            print(_("not measured (stopped): {url}").format(url=url), file=self.out, flush=True)

    def finished(self, summary: RunSummary) -> None:
        pass


class _EtaColumn(ProgressColumn):
    """Rate and time left from the reporter's moving window (``Eta``)."""

    def __init__(self, reporter: RichReporter):
        super().__init__(table_column=Column(no_wrap=True, min_width=16))
        self.reporter = reporter

    def render(self, task) -> Text:
        r = self.reporter
        rate = r.eta.rate()
        speed = f"{rate:.1f}/s  " if rate else ""
        return Text(speed + eta_words(r.eta, r.total - r.done), style="progress.remaining", no_wrap=True,
                    overflow="ellipsis")


class RichReporter(PlainReporter):
    """A progress bar with done/total, rate, time left and the sites that look blocked
    (or can't be told) so far; each of those is printed above the bar as it is found."""

    def __init__(self, hint: Hint, console: Console | None = None, verbosity: int = 0):
        super().__init__(hint, verbosity=verbosity)
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]" + _("measuring")),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("[red]{task.fields[blocked]}"),
            TextColumn("[yellow]{task.fields[unclear]}"),
            TimeElapsedColumn(),
            _EtaColumn(self),
            console=self.console,
            transient=False,
        )
        self.task: TaskID | None = None

    def started(self, total: int, already_done: int) -> None:
        self.total, self.done = total, already_done
        self.progress.start()
        self.task = self.progress.add_task("run", total=total, completed=already_done, blocked=self._blocked(),
                                           unclear=self._unclear())

    def _blocked(self) -> str:
        return _("{n} look blocked").format(n=self.anomalies)

    def _unclear(self) -> str:
        return _("{n} can't tell").format(n=self.unclear) if self.unclear else ""

    def measured(self, m: Measurement) -> None:
        word = self._count(m)
        if word in ("blocked", "cant_tell") and self.verbosity >= 0 or self.verbosity > 0:
            colour = {"blocked": "red", "cant_tell": "yellow"}.get(word, "dim")
            label = _(MARKS[word]) if word in MARKS else "ok"
            self.progress.console.print(f"[{colour}]{escape(label)}[/{colour}] {escape(m.url)}  {escape(short_failures(m))}",
                                        markup=True,
                                        highlight=False)
        assert self.task is not None  # started() comes first
        self.progress.update(self.task, advance=1, blocked=self._blocked(), unclear=self._unclear())

    def cancelled(self, url: str) -> None:
        if self.verbosity >= 0:
            self.progress.console.print("[yellow]" + escape(_("not measured (stopped)")) + f"[/yellow] {escape(url)}")

    def finished(self, summary: RunSummary) -> None:
        self.progress.stop()


class JsonReporter(PlainReporter):
    """JSON lines on stdout: one event per line, for automation."""

    def __init__(self, hint: Hint, out: TextIO = sys.stdout):
        super().__init__(hint, out)

    def emit(self, event: str, **fields) -> None:
        print(json.dumps({"event": event, "at": utcnow(), **fields}, ensure_ascii=False), file=self.out, flush=True)

    def started(self, total: int, already_done: int) -> None:
        self.total, self.done = total, already_done
        self.emit("run_started", total=total, already_done=already_done)

    def measured(self, m: Measurement) -> None:
        word = self._count(m)
        self.emit(
            "measured",
            url=m.url,
            measurement_id=m.measurement_id,
            anomaly_hint=word == "blocked",
            hint=word,
            steps=short_failures(m),
            duration_ms=m.duration_ms,
            done=self.done,
            total=self.total,
        )

    def cancelled(self, url: str) -> None:
        self.emit("not_measured", url=url)

    def finished(self, summary: RunSummary) -> None:
        self.emit(
            "run_finished",
            run_id=summary.run_id,
            status=summary.status,
            measured=summary.measured,
            not_measured=summary.not_measured,
            anomalies=self.anomalies,
            cant_tell=self.unclear,
            bytes=summary.bytes_used,
            elapsed_s=summary.elapsed_s,
        )
