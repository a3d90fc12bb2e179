"""Where a job reports its progress: nowhere, or a rich progress bar (the CLI)."""

from __future__ import annotations

import time
from typing import Any, Protocol


class ProgressSink(Protocol):
    """Where the job reports progress (the CLI renders it with rich)."""

    def start(self, *, total: int | None, unit: str) -> None: ...

    def advance(self, *, rows: int, position: int) -> None: ...

    def stop(self) -> None: ...


class NoProgress:
    def start(self, *, total: int | None, unit: str) -> None:
        pass

    def advance(self, *, rows: int, position: int) -> None:
        pass

    def stop(self) -> None:
        pass


class RichProgress:
    """A rich progress bar on stderr: rows, rows/s and ETA (by bytes for CSV, rows for Parquet)."""

    def __init__(self, console: Any | None = None) -> None:
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self._progress: Any = None
        self._task: Any = None
        self._rows = 0
        self._started = 0.0

    def start(self, *, total: int | None, unit: str) -> None:
        from rich.progress import (
            BarColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]scoring"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rows]:>12,} rows"),
            TextColumn("{task.fields[rate]:>9,.0f} rows/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self._progress.start()
        # The bar and ETA follow bytes read for CSV (row count unknown up front), rows for Parquet.
        self._task = self._progress.add_task(unit, total=total, rows=0, rate=0.0)
        self._started = time.perf_counter()

    def advance(self, *, rows: int, position: int) -> None:
        self._rows += rows
        elapsed = max(time.perf_counter() - self._started, 1e-9)
        self._progress.update(
            self._task, completed=position, rows=self._rows, rate=self._rows / elapsed
        )

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
