"""One mapping from key/value pairs that refuses a repeated key.

Untrusted input that repeats a key is ambiguous (JSON keeps the last member, forms the
first or the last, depending on the parser), so the broker rejects it wherever it
parses: JOSE headers and claims (RFC 7515 §5.2 step 4), digest files, token request
forms. Each caller names its own error; the rule is written once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

V = TypeVar("V")


def unique_mapping(
    pairs: Iterable[tuple[str, V]], duplicate: Callable[[str], Exception]
) -> dict[str, V]:
    """``dict(pairs)``, but ``duplicate(key)`` is raised for the first repeated key. As
    ``json.loads(object_pairs_hook=functools.partial(unique_mapping, duplicate=...))``."""
    items = list(pairs)
    result = dict(items)  # one C-level pass: the common case (no repeat) costs no loop
    if len(result) != len(items):
        seen: set[str] = set()
        for key, _ in items:
            if key in seen:
                raise duplicate(key)
            seen.add(key)
    return result
