"""The one table style of the CLI: readable in an 80-column terminal (an SSH session to a Pi).

A rule under the header, no outer border and no vertical lines (rich ``box.SIMPLE_HEAD``), two spaces
between columns: a table of n columns spends 2(n-1) characters on its frame instead of rich's default
3n+1. Commands keep their default columns within 80 characters and print the rest with ``--wide``.
"""

from __future__ import annotations

#: the terminal width every default table fits (tests render at this width)
NARROW = 80


def compact_table(title: str | None = None, *, caption: str | None = None):
    """A ``rich.table.Table`` in the compact style (title and caption left-aligned)."""
    from rich import box
    from rich.table import Table

    return Table(title=title or None, title_justify="left", caption=caption or None, caption_justify="left",
                 box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)


def add_columns(table, headers, *, left=(), fold=()) -> None:
    """Add columns: ``left`` headers are left-justified (text), the others right-justified (numbers);
    ``fold`` headers may wrap (long names), the others never wrap (a number is never split)."""
    for head in headers:
        table.add_column(head, justify="left" if head in left else "right",
                         no_wrap=head not in fold, overflow="fold" if head in fold else "ellipsis")
