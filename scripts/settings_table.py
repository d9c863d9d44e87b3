"""Print the README's settings table from the Settings dataclass; `--write` updates README.md in place.

A test keeps the README's table equal to this output.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

from tunewire_server.config import Settings, env_name

README = Path(__file__).resolve().parent.parent / "README.md"


def _default(f: dataclasses.Field) -> str:
    if f.default is None or f.default == "":
        return "see meaning" if "Default:" in f.metadata["help"] else "unset"
    return f"`{f.default}`"


def table() -> str:
    rows = ["| flag | environment variable | default | meaning |", "| --- | --- | --- | --- |"]
    for f in dataclasses.fields(Settings):
        rows.append(f"| `--{f.name.replace('_', '-')}` | `{env_name(f)}` | {_default(f)} | {f.metadata['help']} |")
    return "\n".join(rows)


def write() -> None:
    text = README.read_text()
    new = re.sub(r"(<!-- settings:start -->\n).*?(\n<!-- settings:end -->)",
                 lambda m: m.group(1) + table() + m.group(2), text, flags=re.S)
    README.write_text(new)


if __name__ == "__main__":
    write() if "--write" in sys.argv else print(table())
