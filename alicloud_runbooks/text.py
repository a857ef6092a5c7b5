"""Words for counts in logs and reports: "1 instance", "3 instances"."""

from __future__ import annotations


def noun(count: int, word: str, many: str | None = None) -> str:
    """The word agreeing with `count` ("of 1 instance", "of 3 instances"); `many` for an
    irregular plural."""
    return word if count == 1 else many or word + "s"


def plural(count: int, word: str, many: str | None = None) -> str:
    """`count` and the word agreeing with it: "1 instance", "3 instances", "2 batches"."""
    return f"{count} {noun(count, word, many)}"
