"""Minimal diffs and the three position units (code points, UTF-16 units, UTF-8 bytes)."""

from __future__ import annotations

import random
import time

import pytest

from algoroom.yjs import textdiff as td
from algoroom.yjs.textdiff import Edit

SAMPLES = ["", "a", "abc\n", "héllo", "😀", "a😀b", "世界你好", "e\u0301", "👩‍👩‍👧", "\x00x", "tab\tand\r\nCRLF"]


def check(old: str, new: str) -> list[Edit]:
    edits = td.diff(old, new)
    assert td.apply(old, edits) == new
    indices = [e.index for e in edits]
    assert indices == sorted(indices, reverse=True)
    # The byte version, applied to the UTF-8 encoding, gives the same result.
    raw = old.encode("utf-8")
    for index, delete, insert in td.to_utf8(old, edits):
        raw = raw[:index] + insert.encode("utf-8") + raw[index + delete :]
    assert raw.decode("utf-8") == new
    return edits


@pytest.mark.parametrize("old", SAMPLES)
@pytest.mark.parametrize("new", SAMPLES)
def test_every_pair_round_trips(old: str, new: str) -> None:
    edits = check(old, new)
    assert (edits == []) == (old == new)


def test_single_keystroke_is_a_single_minimal_edit() -> None:
    assert td.diff("héllo wörld", "héllo, wörld") == [Edit(5, 0, ",")]
    assert td.diff("a😀b", "a😀😀b") == [Edit(2, 0, "😀")]
    assert td.to_utf8("a😀b", td.diff("a😀b", "a😀😀b")) == [Edit(5, 0, "😀")]
    assert td.diff("世界", "世") == [Edit(1, 1, "")]
    assert td.to_utf8("世界", [Edit(1, 1, "")]) == [Edit(3, 3, "")]


def test_combining_character_added_to_a_base_letter() -> None:
    edits = check("cafe au lait", "cafe\u0301 au lait")
    assert edits == [Edit(4, 0, "\u0301")]


def test_distant_line_edits_are_separate_hunks_and_spare_the_middle() -> None:
    lines = [f"line {i} 世界\n" for i in range(200)]
    old = "".join(lines)
    new_lines = list(lines)
    new_lines[3] = "line 3 changed 😀\n"
    new_lines[150] = "line 150 世界 too\n"
    new = "".join(new_lines)
    edits = check(old, new)
    assert len(edits) == 2
    middle_start = len("".join(lines[:4]))
    middle_end = len("".join(lines[:150]))
    for edit in edits:
        assert edit.index + edit.delete <= middle_start or edit.index >= middle_end
    assert sum(e.delete for e in edits) <= 2


def test_inserted_and_removed_lines() -> None:
    old = "".join(f"{i}\n" for i in range(50))
    new = old.replace("10\n", "").replace("40\n", "40\nnew 😀\n")
    edits = check(old, new)
    assert len(edits) == 2
    assert sum(e.delete for e in edits) == 3


def test_random_edits_round_trip() -> None:
    rng = random.Random(7)
    alphabet = "ab \n世😀\u0301é\x00"
    for _ in range(2_000):
        old = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        new = list(old)
        for _ in range(rng.randint(0, 4)):
            pos = rng.randint(0, len(new))
            if rng.random() < 0.5 and pos < len(new):
                del new[pos : pos + rng.randint(1, 3)]
            else:
                new[pos:pos] = rng.choice(alphabet) * rng.randint(1, 3)
        check(old, "".join(new))


def test_large_text_diff_is_fast() -> None:
    old = "".join(f"    value_{i} = compute({i})  # 世界\n" for i in range(120_000))  # ~5 MB
    new = "é" + old[:1000] + "X" + old[1000:-500] + "😀" + old[-500:]
    started = time.perf_counter()
    check(old, new)
    assert time.perf_counter() - started < 3.0


def test_pathological_repetitive_middle_is_fast() -> None:
    old = "x\n" + "\n" * 15_000 + "}\n" * 4_000 + "y\n"
    new = "X\n" + "\n}" * 9_000 + "\n" * 2_000 + "Y\n"
    started = time.perf_counter()
    check(old, new)
    assert time.perf_counter() - started < 3.0


@pytest.mark.parametrize(
    ("text", "cp", "utf8", "utf16"),
    [
        ("a😀b世", 0, 0, 0),
        ("a😀b世", 1, 1, 1),
        ("a😀b世", 2, 5, 3),
        ("a😀b世", 3, 6, 4),
        ("a😀b世", 4, 9, 5),
        ("e\u0301x", 2, 3, 2),
    ],
)
def test_position_conversions(text: str, cp: int, utf8: int, utf16: int) -> None:
    assert td.cp_to_utf8(text, cp) == utf8
    assert td.utf8_to_cp(text, utf8) == cp
    assert td.cp_to_utf16(text, cp) == utf16
    assert td.utf16_to_cp(text, utf16) == cp


def test_position_conversion_errors() -> None:
    assert td.utf16_to_cp("a😀", 2) == 1  # between the surrogate halves: rounds down
    with pytest.raises(ValueError):
        td.utf8_to_cp("😀", 2)
    with pytest.raises(ValueError):
        td.utf8_to_cp("a", 2)
    with pytest.raises(ValueError):
        td.utf16_to_cp("a", 5)
    assert td.utf16_length("a😀世") == 4
    assert td.utf8_length("a😀世") == 8
