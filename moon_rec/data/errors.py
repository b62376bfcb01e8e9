"""The error raised for bad input data, with file, column and row in its message."""

from __future__ import annotations


class DataError(ValueError):
    """Bad input: a file, column or row that breaks a data contract.

    Args:
        message: what is wrong, in a user's words.
        file: the file (or table) at fault.
        column: the column or field at fault.
        row: the first bad row (0-based), when one row is at fault.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        column: str | None = None,
        row: int | None = None,
    ) -> None:
        self.file = file
        self.column = column
        self.row = row
        self.reason = message
        where = []
        if file is not None:
            where.append(str(file))
        if column is not None:
            where.append(f"column '{column}'")
        if row is not None:
            where.append(f"row {row}")
        super().__init__(": ".join([*where, message]) if where else message)
