"""Progress display: a rich progress bar on a terminal, silence in CI and pipes."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager


class Progress:
    def __init__(self, enabled: bool):
        self.enabled = enabled

    @classmethod
    def for_terminal(cls) -> "Progress":
        return cls(sys.stderr.isatty() and not os.environ.get("CI"))

    @contextmanager
    def task(self, label: str, total: int):
        if not self.enabled:
            yield lambda _step: None
            return
        from rich.progress import BarColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn

        with RichProgress(
            TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), transient=True
        ) as bar:
            tid = bar.add_task(label, total=total)
            first = [True]

            def step(name: str) -> None:
                if not first[0]:
                    bar.advance(tid)
                first[0] = False
                bar.update(tid, description=f"{label}: {name}")

            yield step
            bar.update(tid, completed=total)
