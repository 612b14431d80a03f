"""A Griffe extension for the API reference: Sphinx roles in docstrings become code spans.

Some docstrings cross-reference with reStructuredText roles (``:class:`~a.b.C```,
``:meth:`run```). Markdown has no such syntax, so without this they would show up
literally. ``:role:`a.b.C``` becomes ``a.b.C`` in code font and ``:role:`~a.b.C```
becomes ``C``, as Sphinx would show them.
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension

ROLE = re.compile(r":(?:py:)?(?:class|meth|func|mod|attr|obj|exc|data|const):`([^`]+)`")


def _code(match: re.Match[str]) -> str:
    target = match.group(1)
    if target.startswith("~"):
        target = target[1:].rsplit(".", 1)[-1]
    return f"`{target}`"


class SphinxRoles(Extension):
    """Rewrite Sphinx cross-reference roles in every docstring as Markdown code spans."""

    def on_object(self, *, obj: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(_code, obj.docstring.value)
