"""OSS response bodies, built as text in the element order the real service uses.

The SDKs parse with ElementTree and look elements up by path, so only names and nesting
matter to them; the order and the XML declaration match OSS for humans reading dumps.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from xml.sax.saxutils import escape

DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'

# Characters XML 1.0 cannot carry even as references; OSS users ask for encoding-type=url.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")

Node = tuple[str, "str | int | bool | list[Node] | None"]


def iso8601(timestamp: float) -> str:
    """`2024-05-01T12:00:00.000Z`: OSS keeps whole seconds and oss2 parses only `.000Z`."""
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(timestamp))


def _text(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return escape(_NOT_XML.sub("\ufffd", str(value)))


def _render(nodes: Iterable[Node], out: list[str]) -> None:
    for name, value in nodes:
        if value is None:
            continue
        if isinstance(value, list):
            out.append(f"<{name}>")
            _render(value, out)
            out.append(f"</{name}>")
        else:
            out.append(f"<{name}>{_text(value)}</{name}>")


def document(root: str, children: list[Node] | str) -> bytes:
    """A whole response body: declaration and one root element; `None` children are omitted."""
    out = [DECLARATION]
    _render([(root, children)], out)
    return "".join(out).encode("utf-8")


def error(
    code: str, message: str, request_id: str, host_id: str, details: Mapping[str, str]
) -> bytes:
    children: list[Node] = [
        ("Code", code),
        ("Message", message),
        ("RequestId", request_id),
        ("HostId", host_id),
    ]
    children.extend((name, value) for name, value in details.items())
    return document("Error", children)
