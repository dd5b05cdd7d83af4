"""Write the README's configuration reference from the config dataclasses.

Every registered section (``model``, ``train``, ``augment``, ...) becomes a table of its keys
(nested dataclasses as dotted keys), their defaults and the trailing comment where the field is
declared. The tables replace the text between the two marker lines in README.md::

    python scripts/make_config_reference.py            # rewrite README.md in place
    python scripts/make_config_reference.py --check    # exit 1 if README.md is out of date
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
START = "<!-- config-reference:start (scripts/make_config_reference.py writes this) -->"
END = "<!-- config-reference:end -->"
FIELD = re.compile(r"^\s+(\w+)\s*:[^#]*?=.*?#\s*(.*)$")


def field_comments(cls: type) -> dict[str, str]:
    """Field name -> the comment at the end of its declaration line."""
    out = {}
    for line in inspect.getsource(cls).splitlines():
        m = FIELD.match(line)
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()


def _show(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def rows(cls: type, prefix: str = "") -> list[tuple[str, str, str]]:
    comments = field_comments(cls)
    out = []
    for f in dataclasses.fields(cls):
        value = _default(f)
        if dataclasses.is_dataclass(value):
            out += rows(type(value), f"{prefix}{f.name}.")
            continue
        out.append((prefix + f.name, _show(value), comments.get(f.name, "")))
    return out


def reference() -> str:
    sys.path.insert(0, str(REPO))
    from pcgan.config import SECTIONS, config_class

    config_class()                       # imports the modules that register sections
    parts = []
    for name, cls in SECTIONS.items():
        doc = (cls.__doc__ or "").strip()
        if doc.startswith(cls.__name__ + "("):       # the dataclass's generated signature, not prose
            doc = ""
        doc = inspect.cleandoc(doc).split("\n\n")[0].replace("\n", " ").replace("``", "`")
        parts.append(f"**`{name}:`**" + (f" {doc}" if doc else ""))
        parts.append("")
        parts.append("| key | default | meaning |")
        parts.append("|---|---|---|")
        for key, default, meaning in rows(cls):
            meaning = meaning.replace("|", "\\|")
            parts.append(f"| `{name}.{key}` | `{default}` | {meaning} |")
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--readme", default=str(REPO / "README.md"))
    ap.add_argument("--check", action="store_true", help="only check that the README is up to date")
    args = ap.parse_args()
    readme = Path(args.readme)
    text = readme.read_text(encoding="utf-8")
    if START not in text or END not in text:
        print(f"{readme}: no marker lines {START!r} ... {END!r}", file=sys.stderr)
        return 2
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{reference()}{END}{tail}"
    if args.check:
        if new != text:
            print(f"{readme}: configuration reference is out of date; run python scripts/make_config_reference.py")
            return 1
        return 0
    readme.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
