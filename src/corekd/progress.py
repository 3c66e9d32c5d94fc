"""Progress reporting for long runs: a rich display on a terminal, one line per finished model otherwise."""

from __future__ import annotations

import sys
import time
from contextlib import AbstractContextManager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class Reporter(AbstractContextManager):
    """Silent by default (library use). Subclasses show progress."""

    def plan(self, total_models: int) -> None: ...
    def start_model(self, label: str, epochs: int) -> None: ...
    def epoch(self, epoch: int, score: float | None) -> None: ...
    def end_model(self, summary: str) -> None: ...
    def message(self, text: str) -> None: ...

    def __exit__(self, *exc) -> None:
        return None


def write_line(stream, text: str) -> None:
    """``text`` and its newline in ONE write: ``print`` writes them separately, and a signal (SIGTERM raises
    KeyboardInterrupt in the CLI) landing between the two leaves the line open, so the "interrupted:" line that
    follows would be glued to it."""
    stream.write(text + "\n")
    stream.flush()


class LineReporter(Reporter):
    """Plain lines on stderr: for logs, pipes and CI (no bars)."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr

    def end_model(self, summary: str) -> None:
        write_line(self.stream, summary)

    def message(self, text: str) -> None:
        write_line(self.stream, text)


class _LiveProgress(AbstractContextManager):
    """A rich Progress shown while the context is open; messages print above it."""

    progress: Progress

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()
        return None

    def message(self, text: str) -> None:
        self.progress.console.print(text, markup=False)


class RichReporter(_LiveProgress, Reporter):
    """An overall bar over models and a bar over the current model's epochs."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self.overall: TaskID | None = None  # set by plan()
        self.current: TaskID | None = None  # set by start_model()

    def plan(self, total_models: int) -> None:
        self.overall = self.progress.add_task("models", total=total_models, info="")

    def start_model(self, label: str, epochs: int) -> None:
        self.current = self.progress.add_task(f"  {label}", total=epochs, info="")

    def epoch(self, epoch: int, score: float | None) -> None:
        assert self.current is not None  # the reporter's calls come in order: start_model first
        self.progress.update(self.current, completed=epoch, info="dev n/a" if score is None else f"dev {score:.4f}")

    def end_model(self, summary: str) -> None:
        if self.current is not None:  # the members of an ensemble end one after another: one bar for all
            self.progress.remove_task(self.current)
            self.current = None
        self.progress.console.print(summary)
        if self.overall is not None:
            self.progress.advance(self.overall)


def default_reporter() -> Reporter:
    return RichReporter() if sys.stderr.isatty() else LineReporter()


class GridProgress(AbstractContextManager):
    """Progress of a ``corekd compare`` grid: cells done, running, ETA. Silent by default (library use)."""

    def plan(self, total: int, done_before: int) -> None: ...
    def running(self, n: int) -> None: ...
    def cell_done(self, cell: str, seconds: float, running: int) -> None: ...
    def cell_failed(self, cell: str, error: str) -> None: ...
    def message(self, text: str) -> None: ...

    def __exit__(self, *exc) -> None:
        return None


class LineGridProgress(GridProgress):
    """One line per finished cell on stderr, with the count, the cells running and an estimate of the time left."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.total = self.done = self.before = 0
        self.started = time.perf_counter()

    def plan(self, total: int, done_before: int) -> None:
        self.total, self.done, self.before, self.started = total, done_before, done_before, time.perf_counter()

    def cell_done(self, cell: str, seconds: float, running: int) -> None:
        self.done += 1
        ran, left = self.done - self.before, self.total - self.done
        eta = (time.perf_counter() - self.started) / ran * left
        self.message(
            f"[{self.done}/{self.total}] {cell} ({seconds:.1f} s); {running} running, about {eta / 60:.1f} min left"
        )

    def cell_failed(self, cell: str, error: str) -> None:
        self.message(f"FAILED {cell}: {error}")

    def message(self, text: str) -> None:
        write_line(self.stream, text)


class RichGridProgress(_LiveProgress, GridProgress):
    """One bar for the whole grid: cells done of all, cells running, elapsed and remaining time."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("cells"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.task: TaskID | None = None  # set by plan()

    def plan(self, total: int, done_before: int) -> None:
        self.task = self.progress.add_task("cells", total=total, completed=done_before, info="")

    def running(self, n: int) -> None:
        assert self.task is not None  # the reporter's calls come in order: plan first
        self.progress.update(self.task, info=f"{n} running")

    def cell_done(self, cell: str, seconds: float, running: int) -> None:
        assert self.task is not None
        self.progress.advance(self.task)
        self.progress.update(self.task, info=f"{running} running")
        self.progress.console.print(f"{cell}: {seconds:.1f} s")

    def cell_failed(self, cell: str, error: str) -> None:
        self.message(f"FAILED {cell}: {error}")


def default_grid_progress() -> GridProgress:
    return RichGridProgress() if sys.stderr.isatty() else LineGridProgress()
