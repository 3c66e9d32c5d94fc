"""Progress reporting for long runs: a rich display on a terminal, one line per finished model otherwise."""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class Reporter(AbstractContextManager):
    """Silent by default (library use). Subclasses show progress."""

    def plan(self, total_models: int) -> None: ...
    def start_model(self, label: str, epochs: int) -> None: ...
    def epoch(self, epoch: int, score: float) -> None: ...
    def end_model(self, summary: str) -> None: ...
    def message(self, text: str) -> None: ...

    def __exit__(self, *exc) -> None:
        return None


class LineReporter(Reporter):
    """Plain lines on stderr: for logs, pipes and CI (no bars)."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr

    def end_model(self, summary: str) -> None:
        print(summary, file=self.stream, flush=True)

    def message(self, text: str) -> None:
        print(text, file=self.stream, flush=True)


class RichReporter(Reporter):
    """An overall bar over models and a bar over the current model's epochs."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), console=self.console, transient=False,
        )
        self.overall = None
        self.current = None

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()
        return None

    def plan(self, total_models: int) -> None:
        self.overall = self.progress.add_task("models", total=total_models, info="")

    def start_model(self, label: str, epochs: int) -> None:
        self.current = self.progress.add_task(f"  {label}", total=epochs, info="")

    def epoch(self, epoch: int, score: float) -> None:
        self.progress.update(self.current, completed=epoch, info=f"dev {score:.4f}")

    def end_model(self, summary: str) -> None:
        self.progress.remove_task(self.current)
        self.progress.console.print(summary)
        if self.overall is not None:
            self.progress.advance(self.overall)

    def message(self, text: str) -> None:
        self.progress.console.print(text)


def default_reporter() -> Reporter:
    return RichReporter() if sys.stderr.isatty() else LineReporter()
