"""Index and seed lists as users type them: ``"0-9,15"`` -> ``[0, 1, ..., 9, 15]``.

Shared by ``pcgan export --indices`` and the generation commands' ``--seeds``, so both read
ranges the same way: inclusive ``A-B`` ranges and single numbers, comma separated.
"""

from __future__ import annotations

from pcgan.errors import PcganError

MAX_ITEMS = 10_000_000   # a typo like "0-1000000000" fails here instead of filling memory


def parse_index_list(text: str, what: str = "index", limit: int | None = None) -> list[int]:
    """Parse ``"0-9,15"`` into ``[0, 1, ..., 9, 15]``.

    Ranges are inclusive and must not run backwards (``"5-2"`` is an error, not an empty
    range). Items keep the order typed; a repeated number is kept once, at its first place.
    ``what`` names the items in error messages ("index", "seed"); ``limit``, when given, is
    the count of valid items, so every number must be in ``0 .. limit - 1``.
    Raises PcganError on anything malformed."""
    if not isinstance(text, str) or not text.strip():
        raise PcganError(f"empty {what} list: give numbers and ranges like '0-9,15'")
    out: list[int] = []
    seen: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        lo_hi = part.split("-")
        try:
            if len(lo_hi) == 1:
                lo = hi = int(lo_hi[0])
            elif len(lo_hi) == 2:
                lo, hi = int(lo_hi[0]), int(lo_hi[1])
            else:
                raise ValueError
        except ValueError:
            raise PcganError(f"bad {what} list {text!r}: {part!r} is not a number or a range "
                             f"like '3-7' (numbers are >= 0, comma separated)") from None
        if lo < 0:
            raise PcganError(f"bad {what} list {text!r}: {what} {lo} is negative")
        if hi < lo:
            raise PcganError(f"bad {what} list {text!r}: range {part!r} runs backwards; write '{hi}-{lo}'")
        if limit is not None and hi >= limit:
            raise PcganError(f"{what} {hi} in {text!r} is out of range: there are {limit} "
                             f"(valid: 0-{limit - 1})" if limit else
                             f"{what} {hi} in {text!r} is out of range: there are none")
        if len(out) + (hi - lo + 1) > MAX_ITEMS:
            raise PcganError(f"{what} list {text!r} has more than {MAX_ITEMS:,} items")
        for i in range(lo, hi + 1):
            if i not in seen:
                seen.add(i)
                out.append(i)
    return out


def format_index_list(items) -> str:
    """The inverse of :func:`parse_index_list` for sorted runs: ``[0, 1, 2, 5]`` -> ``"0-2,5"``."""
    items = list(items)
    parts: list[str] = []
    i = 0
    while i < len(items):
        j = i
        while j + 1 < len(items) and items[j + 1] == items[j] + 1:
            j += 1
        parts.append(str(items[i]) if i == j else f"{items[i]}-{items[j]}")
        i = j + 1
    return ",".join(parts)
