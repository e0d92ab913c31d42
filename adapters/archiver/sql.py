"""Named SQL statements from a ``.sql`` file of this package.

A file holds statements each under a ``-- name: <name>`` line, read once;
text before the first name (a header comment) belongs to none.
"""

from __future__ import annotations

import re
from importlib.resources import files

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def statements(filename: str) -> dict[str, str]:
    """The statements of ``filename`` (in this package) by name."""
    text = files(__package__).joinpath(filename).read_text()
    parts = _NAME.split(text)[1:]  # name, body, name, body, ...
    return {name: body.strip() for name, body in zip(parts[::2], parts[1::2], strict=True)}
