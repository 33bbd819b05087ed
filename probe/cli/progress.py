"""How a run talks to the person running it: a rich progress bar on a terminal, plain
lines when piped, JSON lines for automation (--json)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from probe.core.records import Measurement, utcnow
from probe.measure.runner import RunSummary

AnomalyHint = Callable[[Measurement], bool]


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

    def __init__(self, hint: AnomalyHint, out: TextIO = sys.stderr):
        self.hint, self.out = hint, out
        self.total = self.done = self.anomalies = 0

    def started(self, total: int, already_done: int) -> None:
        self.total, self.done = total, already_done
        print(f"measuring {total - already_done} of {total} targets", file=self.out, flush=True)

    def measured(self, m: Measurement) -> None:
        self.done += 1
        flag = self.hint(m)
        self.anomalies += flag
        mark = "ANOMALY " if flag else ""
        print(
            f"[{self.done}/{self.total}] {mark}{m.url} {short_failures(m)} ({(m.duration_ms or 0)/1000:.1f}s)",
            file=self.out,
            flush=True,
        )

    def cancelled(self, url: str) -> None:
        print(f"not measured (stopped): {url}", file=self.out, flush=True)

    def finished(self, summary: RunSummary) -> None:
        pass


class RichReporter(PlainReporter):
    """A progress bar with done/total, rate, ETA and the anomalies seen so far."""

    def __init__(self, hint: AnomalyHint, console: Console | None = None):
        super().__init__(hint)
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]measuring"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("[red]{task.fields[anomalies]} anomalies"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.task: TaskID | None = None

    def started(self, total: int, already_done: int) -> None:
        self.total, self.done = total, already_done
        self.progress.start()
        self.task = self.progress.add_task("run", total=total, completed=already_done, rate="", anomalies=0)

    def measured(self, m: Measurement) -> None:
        self.done += 1
        flag = self.hint(m)
        self.anomalies += flag
        if flag:
            self.progress.console.print(f"[red]anomaly[/red] {m.url}  {short_failures(m)}")
        t = self.progress.tasks[0]
        rate = f"{t.speed:.1f}/s" if t.speed else ""
        assert self.task is not None  # started() comes first
        self.progress.update(self.task, advance=1, anomalies=self.anomalies, rate=rate)

    def cancelled(self, url: str) -> None:
        self.progress.console.print(f"[yellow]not measured (stopped)[/yellow] {url}")

    def finished(self, summary: RunSummary) -> None:
        self.progress.stop()


class JsonReporter(PlainReporter):
    """JSON lines on stdout: one event per line, for automation."""

    def __init__(self, hint: AnomalyHint, out: TextIO = sys.stdout):
        super().__init__(hint, out)

    def emit(self, event: str, **fields) -> None:
        print(json.dumps({"event": event, "at": utcnow(), **fields}, ensure_ascii=False), file=self.out, flush=True)

    def started(self, total: int, already_done: int) -> None:
        self.total, self.done = total, already_done
        self.emit("run_started", total=total, already_done=already_done)

    def measured(self, m: Measurement) -> None:
        self.done += 1
        flag = self.hint(m)
        self.anomalies += flag
        self.emit(
            "measured",
            url=m.url,
            measurement_id=m.measurement_id,
            anomaly_hint=flag,
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
            elapsed_s=summary.elapsed_s,
        )
