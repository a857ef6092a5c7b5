"""One page of a bucket listing: keys and common prefixes after a marker, as OSS pages them.

An entry is a key, or, with a delimiter, the common prefix that stands for all keys below it.
Entries are non-decreasing in key order, so "entries after the marker" resumes a listing
exactly, whether the previous page ended on a key or on a common prefix.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from alisim.oss.store import Bucket, OssObject


@dataclass
class Page:
    objects: list[OssObject] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)
    truncated: bool = False
    next_marker: str = ""

    @property
    def count(self) -> int:
        return len(self.objects) + len(self.prefixes)


def _after_prefix(prefix: str) -> str:
    """The smallest string greater than every string that starts with `prefix`."""
    stripped = prefix.rstrip("\U0010ffff")
    if not stripped:
        return "\U0010ffff" * (len(prefix) + 1)
    return stripped[:-1] + chr(ord(stripped[-1]) + 1)


def list_page(bucket: Bucket, prefix: str, delimiter: str, marker: str, max_keys: int) -> Page:
    keys = bucket.sorted_keys()
    page = Page()
    index = (
        bisect.bisect_right(keys, marker) if marker >= prefix else bisect.bisect_left(keys, prefix)
    )
    while index < len(keys):
        key = keys[index]
        if not key.startswith(prefix):
            break
        cut = key.find(delimiter, len(prefix)) if delimiter else -1
        entry = key if cut < 0 else key[: cut + len(delimiter)]
        if entry <= marker:
            # Only a common prefix can be at or before the marker: skip the keys under it.
            index = bisect.bisect_left(keys, _after_prefix(entry), index + 1)
            continue
        if page.count == max_keys:
            page.truncated = True
            break
        if cut < 0:
            page.objects.append(bucket.objects[key])
            index += 1
        else:
            page.prefixes.append(entry)
            index = bisect.bisect_left(keys, _after_prefix(entry), index + 1)
        page.next_marker = entry
    if not page.truncated:
        page.next_marker = ""
    return page
