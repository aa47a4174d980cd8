"""Each benchmark rewrites its own marked section of docs/benchmarks.md (or of another document: `make chaos`
writes docs/reliability.md) and leaves the rest alone."""

import re
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def section_write(name: str, body: str, *, doc: Path = DOC) -> None:
    """Replace the text between `<!-- name:start -->` and `<!-- name:end -->` in `doc` with `body`, or append
    the marked section when it is not there yet."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    section = f"{start}\n{body.strip()}\n{end}"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    if start in text:
        text = re.sub(re.escape(start) + r".*" + re.escape(end), lambda _: section, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    doc.write_text(text)
