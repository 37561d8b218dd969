"""The one rich progress bar (on stderr: stdout is for results). A bar is a description, a bar, done
of total and elapsed (or remaining) time; ``transient`` bars vanish when done."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def progress_bar(
    console: Console,
    *,
    description: str | None = None,
    enabled: bool = True,
    transient: bool = True,
    remaining: bool = False,
) -> Progress:
    """A ``rich.progress.Progress`` for ``with``; add tasks with ``add_task(description, total=N)``.

    Args:
        console: where it draws (the CLI's stderr console).
        description: a fixed text for every task; None shows each task's own description (literally,
            no rich markup: file names may hold brackets).
        enabled: False gives a disabled bar (prints nothing).
        transient: remove the bar when the ``with`` block ends.
        remaining: show the estimated time remaining instead of the elapsed time.
    """
    text = TextColumn(description) if description is not None else TextColumn("{task.description}", markup=False)
    clock = TimeRemainingColumn() if remaining else TimeElapsedColumn()
    return Progress(text, BarColumn(), MofNCompleteColumn(), clock, console=console, transient=transient,
                    disable=not enabled)
