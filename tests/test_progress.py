"""Progress lines on plain streams (logs, pipes, CI)."""

from __future__ import annotations

import io

from corekd.progress import LineReporter, write_line


class Writes(io.StringIO):
    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def write(self, text: str) -> int:
        self.calls.append(text)
        return super().write(text)


def test_a_line_and_its_newline_are_one_write():
    """A SIGTERM between a line's text and its newline glued the next line ("interrupted: ...") to it in CI."""
    stream = Writes()
    write_line(stream, "teacher seed 0: epoch 1/4 selected")
    reporter = LineReporter(stream)
    reporter.end_model("no_kd seed 0: epoch 2/4 selected")
    reporter.message("wrote report.md")
    assert stream.calls == [
        "teacher seed 0: epoch 1/4 selected\n",
        "no_kd seed 0: epoch 2/4 selected\n",
        "wrote report.md\n",
    ]
