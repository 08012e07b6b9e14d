"""How errors and tables are shown to a person: an error as one line, a URL without its
password, rows as aligned columns."""

from __future__ import annotations

import re
from collections.abc import Sequence

PASSWORD = re.compile(r"([^/:@\s]+:)[^@/\s]+@")  # [scheme://]user:PASSWORD@host


def masked(text: str) -> str:
    """`text` with the password of any URL in it (user:PASSWORD@host) shown as ***."""
    return PASSWORD.sub(r"\1***@", text)


def one_line(err: BaseException | str) -> str:
    """An error's message on one line (messages from Hydra, SQLAlchemy or torch span several)."""
    return " ".join(str(err).split())


def table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """`head` and `rows` as left-aligned columns two spaces apart."""
    lines = [list(head), *(list(r) for r in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) for line in lines
    )
