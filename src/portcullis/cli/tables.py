"""The CLI's tables: readable at 80 columns and when piped, with ids never wrapped or cut.

Why a helper: Rich shares the width between columns and folds or truncates what does not fit,
which broke a 12-character key id over two lines at 80 columns, so it could not be copied into
the next command. Here an id column is as wide as its longest value and never wraps; the other
columns fold, and every cell is plain text (a stored name is never read as Rich markup).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from rich.table import Table
from rich.text import Text

__all__ = ["plain_table"]


def plain_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, ids: Collection[int] = (0,),
                title: str | None = None) -> Table:
    """A table of ``rows`` under ``headers``; the columns at the ``ids`` positions are kept whole."""
    table = Table(title=title)
    for index, header in enumerate(headers):
        if index in ids:
            width = max([len(header), *(len(row[index]) for row in rows)])
            table.add_column(header, no_wrap=True, min_width=width, overflow="ignore")
        else:
            table.add_column(header, overflow="fold")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    return table
