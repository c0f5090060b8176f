"""Awareness relay bookkeeping: ownership per connection, y-protocols clock rules, removal."""

from __future__ import annotations

import pytest

from algoroom.yjs.awareness import AwarenessRelay
from algoroom.yjs.protocol import AwarenessEntry, AwarenessMessage, ProtocolError, decode_message


def entries_of(frame: bytes | None) -> tuple[AwarenessEntry, ...]:
    assert frame is not None
    message = decode_message(frame)
    assert isinstance(message, AwarenessMessage)
    return message.entries


def test_tracks_latest_state_by_clock() -> None:
    relay: AwarenessRelay[str] = AwarenessRelay()
    assert relay.apply("a", [AwarenessEntry(1, 1, '{"x":1}')])
    assert relay.apply("a", [AwarenessEntry(1, 2, '{"x":2}')])
    assert not relay.apply("a", [AwarenessEntry(1, 1, '{"x":"stale"}')])
    assert not relay.apply("a", [AwarenessEntry(1, 2, '{"x":"same clock"}')])
    assert relay.states == {1: (2, '{"x":2}')}
    assert relay.client_ids("a") == {1}


def test_null_with_same_clock_removes() -> None:
    relay: AwarenessRelay[str] = AwarenessRelay()
    relay.apply("a", [AwarenessEntry(1, 4, "{}")])
    assert relay.apply("a", [AwarenessEntry(1, 4, "null")])
    assert relay.states == {}
    assert relay.remove_peer("a") is None  # nothing left to remove on close


def test_remove_peer_nulls_its_ids_with_clock_plus_one() -> None:
    relay: AwarenessRelay[str] = AwarenessRelay()
    relay.apply("a", [AwarenessEntry(1, 5, "{}"), AwarenessEntry(2, 1, "{}")])
    relay.apply("b", [AwarenessEntry(3, 7, "{}")])
    assert entries_of(relay.remove_peer("a")) == (AwarenessEntry(1, 6, "null"), AwarenessEntry(2, 2, "null"))
    assert relay.states == {3: (7, "{}")}
    assert relay.remove_peer("a") is None


def test_reconnected_client_keeps_its_state_when_old_socket_closes() -> None:
    relay: AwarenessRelay[str] = AwarenessRelay()
    relay.apply("old", [AwarenessEntry(1, 5, '{"n":1}')])
    relay.apply("new", [AwarenessEntry(1, 6, '{"n":1}')])
    assert relay.remove_peer("old") is None
    assert relay.states == {1: (6, '{"n":1}')}
    assert entries_of(relay.remove_peer("new")) == (AwarenessEntry(1, 7, "null"),)


def test_snapshot_holds_every_present_state() -> None:
    relay: AwarenessRelay[str] = AwarenessRelay()
    assert relay.snapshot_frame() is None
    relay.apply("a", [AwarenessEntry(1, 1, '{"name":"Zoë"}'), AwarenessEntry(2, 1, "null")])
    relay.apply("b", [AwarenessEntry(3, 2, "{}")])
    expected = {AwarenessEntry(1, 1, '{"name":"Zoë"}'), AwarenessEntry(3, 2, "{}")}
    assert set(entries_of(relay.snapshot_frame())) == expected
    assert len(relay) == 2


def test_too_many_ids_from_one_connection() -> None:
    relay: AwarenessRelay[str] = AwarenessRelay(max_ids_per_peer=2)
    relay.apply("a", [AwarenessEntry(1, 1, "{}"), AwarenessEntry(2, 1, "{}")])
    with pytest.raises(ProtocolError):
        relay.apply("a", [AwarenessEntry(3, 1, "{}")])
    assert set(relay.states) == {1, 2}
