"""Minimal edits between two texts, and the three ways of counting a position in one.

When a whole new buffer arrives (``PUT /code``, a JSON ``code_update``), replacing the
document's text wholesale would move every remote cursor and clobber concurrent typing.
Instead we apply only what changed: common prefix and suffix are kept, and the middle is
compared line by line so that edits on distant lines stay separate hunks (a cursor on an
untouched line between them, or a concurrent edit there, is left alone).

Positions: Python ``str`` counts code points, Yjs clients count UTF-16 code units, and
pycrdt's ``Text`` counts UTF-8 bytes. :func:`diff` works in code points; :func:`to_utf8`
turns its ops into the byte offsets pycrdt wants; the ``*_to_*`` helpers convert single
positions.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import NamedTuple

#: Line-level matching of the changed middle is skipped (one hunk instead) beyond this many
#: lines on either side: difflib is quadratic in the worst case.
MAX_LINE_DIFF_LINES = 20_000


class Edit(NamedTuple):
    """Replace ``delete`` units at ``index`` by ``insert`` (units: see the producing function)."""

    index: int
    delete: int
    insert: str


def common_prefix(a: str, b: str) -> int:
    """Length of the longest common prefix (binary search on slice equality: C speed)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def common_suffix(a: str, b: str, limit: int) -> int:
    """Length of the longest common suffix, at most ``limit``."""
    lo, hi = 0, min(len(a), len(b), limit)
    la, lb = len(a), len(b)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[la - mid : la - lo] == b[lb - mid : lb - lo]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _trimmed(old: str, new: str, offset: int) -> Edit | None:
    """One edit turning ``old`` into ``new``, with the common prefix/suffix left out."""
    if old == new:
        return None
    prefix = common_prefix(old, new)
    suffix = common_suffix(old, new, min(len(old), len(new)) - prefix)
    return Edit(offset + prefix, len(old) - prefix - suffix, new[prefix : len(new) - suffix])


def diff(old: str, new: str) -> list[Edit]:
    """Edits (in code points) turning ``old`` into ``new``, **in descending index order**.

    Every index refers to ``old``; because the edits come last-first, applying them one
    after the other in the given order is correct without shifting indices.
    """
    if old == new:
        return []
    prefix = common_prefix(old, new)
    suffix = common_suffix(old, new, min(len(old), len(new)) - prefix)
    # Line-align the middle: widen it to whole lines so that difflib compares lines.
    start = old.rfind("\n", 0, prefix) + 1
    old_end, new_end = len(old) - suffix, len(new) - suffix
    newline = old.find("\n", old_end)
    tail = len(old) - newline - 1 if newline != -1 else 0
    tail = min(tail, suffix)
    old_mid = old[start : len(old) - tail]
    new_mid = new[start : len(new) - tail]
    old_lines = old_mid.splitlines(keepends=True)
    new_lines = new_mid.splitlines(keepends=True)
    if len(old_lines) <= 1 or len(new_lines) <= 1 or max(len(old_lines), len(new_lines)) > MAX_LINE_DIFF_LINES:
        return [Edit(prefix, old_end - prefix, new[prefix:new_end])]

    edits: list[Edit] = []
    old_pos = [start]
    for line in old_lines:
        old_pos.append(old_pos[-1] + len(line))
    new_pos = [start]
    for line in new_lines:
        new_pos.append(new_pos[-1] + len(line))
    # autojunk: lines that make up over 1% of a long text (blank lines, lone braces) cannot
    # anchor a match, which keeps difflib near-linear on repetitive code.
    matcher = difflib.SequenceMatcher(None, old_lines, new_lines)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        a0, a1 = old_pos[i1], old_pos[i2]
        b0, b1 = new_pos[j1], new_pos[j2]
        edit = _trimmed(old[a0:a1], new[b0:b1], a0)
        if edit is not None:
            edits.append(edit)
    edits.reverse()
    return edits


def apply(text: str, edits: Sequence[Edit]) -> str:
    """Apply edits as :func:`diff` returns them (descending, in code points)."""
    for index, delete, insert in edits:
        text = text[:index] + insert + text[index + delete :]
    return text


def to_utf8(old: str, edits: Sequence[Edit]) -> list[Edit]:
    """The same (descending) edits with index and delete count in UTF-8 bytes of ``old``.

    One pass over ``old`` for all edits, so a many-hunk diff of a large text stays linear.
    """
    if old.isascii():
        return list(edits)
    cuts = sorted({p for index, delete, _ in edits for p in (index, index + delete)})
    byte_at: dict[int, int] = {}
    pos = nbytes = 0
    for cut in cuts:
        nbytes += len(old[pos:cut].encode("utf-8"))
        byte_at[cut] = nbytes
        pos = cut
    return [Edit(byte_at[i], byte_at[i + d] - byte_at[i], s) for i, d, s in edits]


# --------------------------------------------------------------------------- single positions


def utf8_length(text: str) -> int:
    return len(text.encode("utf-8"))


def utf16_length(text: str) -> int:
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def cp_to_utf8(text: str, index: int) -> int:
    """Code-point index -> UTF-8 byte offset (pycrdt ``Text`` index)."""
    return utf8_length(text[:index])


def utf8_to_cp(text: str, offset: int) -> int:
    """UTF-8 byte offset -> code-point index; :class:`ValueError` inside a character."""
    raw = text.encode("utf-8")
    if not 0 <= offset <= len(raw):
        raise ValueError(f"byte offset {offset} outside a text of {len(raw)} bytes")
    try:
        return len(raw[:offset].decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"byte offset {offset} falls inside a character") from None


def cp_to_utf16(text: str, index: int) -> int:
    """Code-point index -> UTF-16 code-unit index (what a Yjs client calls the index)."""
    return utf16_length(text[:index])


def utf16_to_cp(text: str, index: int) -> int:
    """UTF-16 index -> code-point index; inside a surrogate pair rounds down to the pair."""
    if index < 0:
        raise ValueError(f"negative index {index}")
    units = 0
    for cp, ch in enumerate(text):
        if units >= index:
            return cp
        units += 2 if ord(ch) > 0xFFFF else 1
        if units > index:  # index pointed between the two halves of a surrogate pair
            return cp
    if units < index:
        raise ValueError(f"UTF-16 index {index} outside a text of {units} units")
    return len(text)
