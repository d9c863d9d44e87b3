"""Print the README's settings table from the Settings dataclass (a test keeps the README in sync)."""

from __future__ import annotations

import dataclasses

from tunewire_server.config import Settings, env_name


def table() -> str:
    rows = ["| flag | environment variable | default | meaning |", "| --- | --- | --- | --- |"]
    for f in dataclasses.fields(Settings):
        default = f.default
        shown = "(see meaning)" if default is None else f"`{default}`"
        rows.append(f"| `--{f.name.replace('_', '-')}` | `{env_name(f)}` | {shown} | {f.metadata['help']} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
