"""The y-websocket frame codec: exact lib0 encodings, and total decoding (garbage -> ProtocolError)."""

from __future__ import annotations

import random

import pytest

from algoroom.yjs import protocol as p
from algoroom.yjs.protocol import AwarenessEntry, ProtocolError


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (1, b"\x01"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (300, b"\xac\x02"),
        (2**32 - 1, b"\xff\xff\xff\xff\x0f"),
    ],
)
def test_var_uint_matches_lib0(value: int, encoded: bytes) -> None:
    assert p.encode_var_uint(value) == encoded
    assert p.Decoder(encoded).read_var_uint() == value


@pytest.mark.parametrize("value", [2**53 - 1, 2**53, 2**63, 2**64 - 1])
def test_var_uint_round_trips_up_to_64_bits(value: int) -> None:
    assert p.Decoder(p.encode_var_uint(value)).read_var_uint() == value


def test_var_uint_refuses_negative_and_overlong() -> None:
    with pytest.raises(ValueError):
        p.encode_var_uint(-1)
    with pytest.raises(ProtocolError, match="64 bits"):
        p.Decoder(b"\xff" * 11).read_var_uint()
    with pytest.raises(ProtocolError, match="truncated"):
        p.Decoder(b"\x80").read_var_uint()


@pytest.mark.parametrize("text", ["", "abc", "é", "Zoë 😀", "世界", "e\u0301", "\x00"])
def test_var_string_prefix_is_utf8_byte_length(text: str) -> None:
    out = bytearray()
    p.write_var_string(out, text)
    raw = text.encode("utf-8")
    assert bytes(out) == p.encode_var_uint(len(raw)) + raw
    assert p.Decoder(bytes(out)).read_var_string() == text


def test_sync_frames() -> None:
    assert p.encode_sync_step1(b"\x00") == b"\x00\x00\x01\x00"
    assert p.encode_sync_step2(b"\x00\x00") == b"\x00\x01\x02\x00\x00"
    assert p.encode_update(b"\x01\x02\x03") == b"\x00\x02\x03\x01\x02\x03"
    for step in (p.SYNC_STEP1, p.SYNC_STEP2, p.SYNC_UPDATE):
        frame = p._sync_frame(step, b"payload")
        assert p.decode_message(frame) == p.SyncMessage(step, b"payload")


def test_awareness_frame_round_trip_with_non_ascii_state() -> None:
    entries = (AwarenessEntry(1, 3, '{"user":{"name":"Zoë 😀 世界"}}'), AwarenessEntry(2**32 - 1, 9, "null"))
    frame = p.encode_awareness(entries)
    message = p.decode_message(frame)
    assert isinstance(message, p.AwarenessMessage)
    assert message.entries == entries
    assert message.entries[1].removed and not message.entries[0].removed
    assert frame == bytes([1]) + p.encode_var_uint(len(message.payload)) + message.payload


def test_keepalive_is_an_empty_awareness_update() -> None:
    assert p.decode_message(p.KEEPALIVE_FRAME) == p.AwarenessMessage(b"\x00", ())


def test_query_and_auth() -> None:
    assert p.decode_message(p.encode_query_awareness()) == p.QueryAwarenessMessage()
    assert p.decode_message(p.encode_auth_denied("nö")) == p.AuthMessage("nö")


@pytest.mark.parametrize(
    ("frame", "match"),
    [
        (b"", "truncated"),
        (b"\x04", "unknown message type"),
        (b"\x00\x03\x00", "unknown sync step"),
        (b"\x00\x00", "truncated"),
        (b"\x00\x00\x05ab", "overruns"),
        (b"\x00\x00\x01\x00\x00", "trailing"),
        (b"\x03\x00", "trailing"),
        (b"\x01\x05\x01\x01\x01\x01\xff", "UTF-8"),
        (b"\x01\x02\x7f\x00", "claims 127 entries"),
        (b"\x01\x04\x01\x01\x01\x00\x00", "trailing"),
    ],
)
def test_malformed_frames(frame: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        p.decode_message(frame)


def test_not_bytes_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        p.decode_message("text frame")  # type: ignore[arg-type]


def _valid_frames() -> list[bytes]:
    return [
        p.encode_sync_step1(b"\x01\x05\x03"),
        p.encode_update(bytes(range(40))),
        p.encode_awareness([AwarenessEntry(7, 1, '{"name":"ä"}'), AwarenessEntry(8, 2, "null")]),
        p.encode_query_awareness(),
        p.encode_auth_denied("no"),
        p.KEEPALIVE_FRAME,
    ]


def test_fuzzed_garbage_only_ever_raises_protocol_error() -> None:
    rng = random.Random(5)
    valid = _valid_frames()
    decoded = 0
    for i in range(20_000):
        kind = i % 4
        if kind == 0:
            frame = rng.randbytes(rng.randint(0, 64))
        elif kind == 1:
            base = bytearray(rng.choice(valid))
            for _ in range(rng.randint(1, 3)):
                if base:
                    base[rng.randrange(len(base))] = rng.randrange(256)
            frame = bytes(base)
        elif kind == 2:
            base = rng.choice(valid)
            frame = base[: rng.randrange(len(base) + 1)] + rng.randbytes(rng.randint(0, 3))
        else:
            frame = bytes([rng.randrange(4)]) + b"\xff" * rng.randint(0, 12) + rng.randbytes(rng.randint(0, 8))
        try:
            p.decode_message(frame)
        except ProtocolError:
            continue
        decoded += 1
    assert decoded > 100  # the fuzzer also produced well-formed frames, and they decoded
