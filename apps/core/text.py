"""Text from outside that PostgreSQL cannot store, found before anything is written.

PostgreSQL's `text` and `jsonb` refuse U+0000, and UTF-8 cannot encode an unpaired UTF-16 surrogate
(U+D800-U+DFFF) that a JSON body may carry as an escape such as `"\\ud83d"`. I-JSON (RFC 7493, section
2.1) forbids both kinds of string for interoperable JSON; Rowbell refuses them where they enter.
"""

from __future__ import annotations

import re

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

NUL_MESSAGE = "Contains a NUL character (\\u0000), which cannot be stored."
SURROGATE_MESSAGE = (
    "Contains an unpaired surrogate escape (e.g. \\ud83d without its pair), which is not "
    "Unicode text; send the character itself as UTF-8, or both halves of its pair."
)


def text_problem(value: str) -> str | None:
    """Why the string `value` cannot be stored (one of the messages above), or None."""
    found = _UNSTORABLE.search(value)
    if found is None:
        return None
    return NUL_MESSAGE if found.group() == "\x00" else SURROGATE_MESSAGE


def unstorable_find(value, path: str = "") -> tuple[str, str] | None:
    """The first string (a value or a key) in a JSON-shaped `value` that cannot be stored.

    Returns `(path, message)`, where `path` is written as the API's error fields are (`data.x`,
    `to[0].name`), or None when every string can be stored. Iterative: a deeply nested body cannot
    exhaust the stack.
    """
    stack = [(path, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            problem = text_problem(item)
            if problem:
                return where, problem
        elif isinstance(item, dict):
            for key, child in reversed(list(item.items())):
                key_text = str(key)
                # The path goes back in the error answer, which must itself be storable and encodable.
                printable = _UNSTORABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", key_text)
                child_path = f"{where}.{printable}" if where else printable
                problem = text_problem(key_text)
                if problem:
                    return child_path, f"The key {problem[0].lower()}{problem[1:]}"
                stack.append((child_path, child))
        elif isinstance(item, list):
            for index in range(len(item) - 1, -1, -1):
                stack.append((f"{where}[{index}]", item[index]))
    return None


def storable(value: str) -> str:
    """`value` with every character PostgreSQL cannot store written as its escape (U+0000 as `\\u0000`, an
    unpaired surrogate as `\\ud83d`), so that text from outside (a receiver's answer, a provider's error) is
    kept as readable as it came, and its row is written. Other text is returned as it is."""
    if not isinstance(value, str) or _UNSTORABLE.search(value) is None:
        return value
    return _UNSTORABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", value)
