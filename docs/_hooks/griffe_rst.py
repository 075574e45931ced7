"""A griffe extension for the API reference: the docstrings' RST roles as Markdown code.

``:class:`~.control.BlendMask``` becomes ```BlendMask```, ``:func:`evaluate``` becomes
```evaluate```, and a paragraph ending in ``::`` (an RST literal block follows) ends in ``:``.
Nothing else of a docstring changes; the code is not touched (griffe reads a copy).
"""

from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const):`(~?)([^`]+)`")


def markdown(text: str) -> str:
    def code(match: re.Match) -> str:
        target = match.group(2).split("<")[-1].rstrip(">").strip()
        if match.group(1):  # ~: only the last name is shown
            target = target.rsplit(".", 1)[-1]
        return f"`{target}`"

    text = ROLE.sub(code, text)
    return re.sub(r"(\S)::$", r"\1:", text, flags=re.MULTILINE)


class RstRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown(obj.docstring.value)
