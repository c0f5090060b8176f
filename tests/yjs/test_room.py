"""YRoom without a server: pycrdt clients exchanging frames with the room directly."""

from __future__ import annotations

import random

import pytest
from pycrdt import Assoc, Doc, Text

from algoroom.yjs import ORIGIN_LOAD, ORIGIN_SEED, ORIGIN_SERVER, ProtocolError, YRoom
from algoroom.yjs.protocol import (
    KEEPALIVE_FRAME,
    AwarenessEntry,
    AwarenessMessage,
    SyncMessage,
    decode_message,
    encode_awareness,
    encode_query_awareness,
    encode_sync_step1,
    encode_update,
)
from algoroom.yjs.room import seed_client_id

from .fakes import FakeClient, RecordingPeer, pump_all


@pytest.fixture
def changes() -> list[object]:
    return []


@pytest.fixture
def room(changes: list[object]) -> YRoom:
    return YRoom("test", on_change=changes.append)


def test_join_sends_sync_step1_then_awareness(room: YRoom) -> None:
    peer = RecordingPeer()
    frames = room.join(peer)
    assert frames == [encode_sync_step1(room.state_vector())]
    a = FakeClient(room, "a")
    a.set_awareness('{"user":"a"}')
    frames = room.join(RecordingPeer())
    assert len(frames) == 2
    assert decode_message(frames[1]) == AwarenessMessage(
        decode_message(frames[1]).payload, (AwarenessEntry(a.client_id, 1, '{"user":"a"}'),)
    )


def test_two_clients_converge_and_updates_are_not_echoed(room: YRoom, changes: list[object]) -> None:
    a, b = FakeClient(room, "a"), FakeClient(room, "b")
    pump_all(a, b)
    a.edit(0, insert="hello 世界")
    assert a.frames == []  # the sender does not get its own update back
    pump_all(a, b)
    assert b.text == room.text == "hello 世界"
    assert changes == [a]
    b.edit(len("hello ".encode()), insert="😀")
    pump_all(a, b)
    assert a.text == b.text == room.text == "hello 😀世界"


def test_concurrent_inserts_at_same_position_converge(room: YRoom) -> None:
    clients = [FakeClient(room, f"c{i}") for i in range(3)]
    pump_all(*clients)
    clients[0].edit(0, insert="base\n")
    pump_all(*clients)
    for i, client in enumerate(clients):  # all at the same spot, none has seen the others
        client.ytext.insert(4, f"[{i}😀]")
    for client in clients:
        client.flush()
    pump_all(*clients)
    texts = {client.text for client in clients} | {room.text}
    assert len(texts) == 1
    text = texts.pop()
    assert all(f"[{i}😀]" in text for i in range(3)) and text.startswith("base") and text.endswith("\n")


def test_late_joiner_gets_full_state_and_offline_edits_reach_the_room(room: YRoom) -> None:
    a = FakeClient(room, "a")
    a.edit(0, insert="shared")
    offline = Doc()
    offline_text = offline.get("code", type=Text)
    offline.apply_update(room.encode_state())
    offline_text.insert(0, ">> ")  # edited while disconnected
    b = FakeClient(room, "b")
    b.doc.apply_update(offline.get_update())  # the provider's doc still holds them
    pump_all(a, b)
    assert a.text == b.text == room.text == ">> shared"


def test_sync_step1_is_answered_with_what_the_peer_lacks(room: YRoom) -> None:
    room.apply_text("abc")
    peer = RecordingPeer()
    room.join(peer)
    room.receive(peer, encode_sync_step1(b"\x00"))
    reply = decode_message(peer.frames[-1])
    assert isinstance(reply, SyncMessage) and reply.step == 1
    doc = Doc()
    doc.apply_update(reply.payload)
    assert str(doc.get("code", type=Text)) == "abc"


def test_readonly_peer_cannot_change_the_document(room: YRoom, changes: list[object]) -> None:
    writer = FakeClient(room, "w")
    writer.edit(0, insert="text")
    viewer = FakeClient(room, "v", readonly=True)
    pump_all(writer, viewer)
    assert viewer.text == "text"
    viewer.edit(0, insert="hack ")
    pump_all(writer, viewer)
    assert room.text == writer.text == "text"
    assert changes == [writer]


def test_awareness_is_relayed_to_everyone_including_the_sender(room: YRoom) -> None:
    a, b = FakeClient(room, "a"), FakeClient(room, "b")
    pump_all(a, b)
    a.set_awareness('{"user":{"name":"Zoë 😀"}}')
    pump_all(a, b)
    assert a.present() == b.present() == {a.client_id: '{"user":{"name":"Zoë 😀"}}'}


def test_leave_removes_awareness_for_everyone_at_once(room: YRoom) -> None:
    a, b, c = FakeClient(room, "a"), FakeClient(room, "b"), FakeClient(room, "c")
    b.set_awareness("{}")
    c.set_awareness("{}")
    pump_all(a, b, c)
    assert set(a.present()) == {b.client_id, c.client_id}
    assert room.leave(b) == 2
    pump_all(a, c)
    assert set(a.present()) == set(c.present()) == {c.client_id}
    assert a.awareness[b.client_id] == (2, "null")  # clock + 1: newer than the last state
    assert room.leave(b) == 2  # twice is harmless


def test_query_awareness_answers_all_states(room: YRoom) -> None:
    a = FakeClient(room, "a")
    a.set_awareness('{"a":1}')
    peer = RecordingPeer()
    room.join(peer)
    room.receive(peer, encode_query_awareness())
    message = decode_message(peer.frames[-1])
    assert isinstance(message, AwarenessMessage)
    assert message.entries == (AwarenessEntry(a.client_id, 1, '{"a":1}'),)


def test_apply_text_is_minimal_and_keeps_remote_positions(room: YRoom, changes: list[object]) -> None:
    room.apply_text("line one\nline two\nline three\n")
    a = FakeClient(room, "a")
    pump_all(a)
    cursor_index = room.text.index("three")
    cursor = a.ytext.sticky_index(cursor_index, Assoc.AFTER)  # ASCII: bytes == code points
    assert room.apply_text("line ONE!\nline two\nline three\n")
    pump_all(a)
    assert a.text == "line ONE!\nline two\nline three\n"
    assert cursor.get_index() == a.text.index("three")
    assert changes == [ORIGIN_SERVER, ORIGIN_SERVER]
    assert not room.apply_text(room.text)  # no change, no transaction, no callback
    assert len(changes) == 2


def test_apply_text_with_non_ascii(room: YRoom) -> None:
    a = FakeClient(room, "a")
    for text in ["😀", "a😀b", "世界😀 e\u0301", "", "👩‍👩‍👧 and 世界", "👩‍👩‍👧 and 世界!"]:
        room.apply_text(text)
        pump_all(a)
        assert room.text == a.text == text


def test_apply_text_refuses_lone_surrogates(room: YRoom) -> None:
    with pytest.raises(UnicodeEncodeError):
        room.apply_text("bad \ud800")
    assert room.text == ""


def test_three_way_merge_keeps_concurrent_edits_on_other_lines(room: YRoom) -> None:
    room.apply_text("first 世界\nsecond\nthird 😀\n")
    base = room.encode_state()
    a = FakeClient(room, "a")
    pump_all(a)
    # Since the base, a Yjs client changed line 3 ...
    a.edit(len("first 世界\nsecond\nthird ".encode()), insert="(yjs) ")
    pump_all(a)
    # ... and a REST client that started from the base rewrites line 1.
    assert room.apply_text_from_base(base, "FIRST 世界\nsecond\nthird 😀\n")
    pump_all(a)
    assert room.text == a.text == "FIRST 世界\nsecond\nthird (yjs) 😀\n"
    # A second writer from the same base, editing line 2, keeps both earlier edits too.
    assert room.apply_text_from_base(base, "first 世界\nsecond, edited\nthird 😀\n")
    assert room.text == "FIRST 世界\nsecond, edited\nthird (yjs) 😀\n"
    assert not room.apply_text_from_base(base, "first 世界\nsecond\nthird 😀\n")
    with pytest.raises(ValueError):
        room.apply_text_from_base(b"\xff\xff", "x")


def test_encode_state_and_load_round_trip(changes: list[object]) -> None:
    room = YRoom("a")
    rng = random.Random(1)
    for _ in range(300):
        text = room.text
        pos = rng.randint(0, len(text))
        room.apply_text(text[:pos] + rng.choice(["x", "世", "😀", "\n"]) + text[pos + rng.randint(0, 1) :])
    state = room.encode_state()
    again = YRoom("b", on_change=changes.append)
    again.load(state)
    assert again.text == room.text
    assert changes == [ORIGIN_LOAD]
    assert again.encode_state() == state
    with pytest.raises(ProtocolError):
        YRoom().load(b"\x05garbage")


def test_seed_once_and_deterministically(changes: list[object]) -> None:
    one = YRoom("1", on_change=changes.append)
    two = YRoom("2")
    assert one.seed("print('hi 😀')\n") and two.seed("print('hi 😀')\n")
    assert not one.seed("other")  # already has content
    assert changes == [ORIGIN_SEED]
    # Two servers that seeded the same text independently merge without duplicating it.
    one.apply_update(two.encode_state())
    assert one.text == "print('hi 😀')\n"
    assert seed_client_id("x") == seed_client_id("x") != seed_client_id("y")
    assert not YRoom().seed("")


def test_on_change_not_called_for_duplicate_updates(room: YRoom, changes: list[object]) -> None:
    a = FakeClient(room, "a")
    a.edit(0, insert="once")
    update = a.doc.get_update()
    room.receive(a, encode_update(update))
    assert changes == [a]


def test_garbage_from_one_peer_does_not_disturb_others(room: YRoom) -> None:
    a, b = FakeClient(room, "a"), FakeClient(room, "b")
    a.edit(0, insert="safe")
    pump_all(a, b)
    evil = RecordingPeer("evil")
    room.join(evil)
    rng = random.Random(3)
    rejected = 0
    good = a.doc.get_update()
    for i in range(3_000):
        if i % 3 == 0:
            frame = rng.randbytes(rng.randint(0, 30))
        else:
            mutated = bytearray(good)
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            frame = encode_update(bytes(mutated)) if i % 3 == 1 else encode_sync_step1(bytes(mutated))
        try:
            room.receive(evil, frame)
        except ProtocolError:
            rejected += 1
    assert rejected > 1_000
    # Mutated-but-well-formed updates are legitimate Yjs to the room: they may add text, or
    # even forge items under a's client ID (Yjs does not authenticate client IDs), so only
    # fresh clients are compared. What matters: nothing crashed, the room still syncs.
    c, d = FakeClient(room, "c"), FakeClient(room, "d")
    pump_all(a, b, c, d)
    c.edit(0, insert="still ")
    pump_all(a, b, c, d)
    assert c.text == d.text == room.text
    assert room.text.startswith("still ")


def test_receive_from_unknown_peer_is_a_programming_error(room: YRoom) -> None:
    with pytest.raises(ValueError):
        room.receive(RecordingPeer(), encode_query_awareness())


def test_a_peer_whose_send_raises_does_not_stop_the_others(room: YRoom) -> None:
    class Broken(RecordingPeer):
        def send(self, frame: bytes) -> None:
            raise RuntimeError("socket gone")

    room.join(Broken())
    a, b = FakeClient(room, "a"), FakeClient(room, "b")
    a.edit(0, insert="x")
    pump_all(a, b)
    assert b.text == "x"


def test_keepalive_only_for_idle_peers(room: YRoom) -> None:
    a = RecordingPeer("a")
    room.join(a)
    b = FakeClient(room, "b")
    now = 1e12  # far in the future: everyone is idle
    assert room.keepalive(idle=15.0, now=now) == 2
    assert a.frames[-1] == KEEPALIVE_FRAME
    assert room.keepalive(idle=15.0) == 0  # just pinged
    b.set_awareness("{}")
    assert b.frames[-1] == encode_awareness([AwarenessEntry(b.client_id, 1, "{}")])


def test_close_drops_everything(room: YRoom) -> None:
    a = FakeClient(room, "a")
    room.close()
    room.close()
    assert room.closed and len(room) == 0
    with pytest.raises(RuntimeError):
        room.apply_text("x")
    with pytest.raises(ValueError):
        room.receive(a, encode_query_awareness())


def test_update_after_a_clock_gap_waits_for_the_gap(room: YRoom, changes: list[object]) -> None:
    # A reconnecting client that typed offline, then types again before its SyncStep2 left:
    # the second update arrives first and must not show up before the first.
    a, b = FakeClient(room, "a"), FakeClient(room, "b")
    a.edit(0, insert="hello world")
    pump_all(a, b)
    before_offline = a.doc.get_state()
    a.ytext.insert(0, "OFFLINE ")
    after_offline = a.doc.get_state()
    a.ytext.insert(len(a.ytext), " typed")
    room.receive(a, encode_update(a.doc.get_update(after_offline)))
    pump_all(a, b)
    assert room.text == b.text == "hello world"
    room.receive(a, encode_update(a.doc.get_update(before_offline)))
    pump_all(a, b)
    assert room.text == b.text == a.text == "OFFLINE hello world typed"


def test_peer_update_continuing_the_servers_own_edits_is_applied_not_held(room: YRoom) -> None:
    # The room does not parse its own edits' updates; a peer relaying the server's later
    # structs (a client syncing another's state) must still be seen as gap-free.
    a, b = FakeClient(room, "a"), FakeClient(room, "b")
    pump_all(a, b)
    room.apply_text("abc")
    pump_all(a, b)
    seen_by_a = a.doc.get_state()
    room.apply_text("abc def")
    relayed = Doc()
    relayed.apply_update(room.encode_state())
    relayed.get("code", type=Text).insert(0, ">")
    room.receive(b, encode_update(relayed.get_update(seen_by_a)))  # b speaks for `relayed`
    pump_all(a, b)
    assert room.text == a.text == ">abc def"


def test_update_clock_ranges_reads_every_client_in_utf16_ticks() -> None:
    from algoroom.yjs.protocol import read_state_vector, update_clock_ranges

    one, two = Doc(client_id=11), Doc(client_id=22)
    one.get("code", type=Text).insert(0, "a😀")  # 3 UTF-16 units: clocks 0..2
    two.apply_update(one.get_update())
    two.get("code", type=Text).insert(0, "世界")
    two_state = two.get_state()
    assert update_clock_ranges(two.get_update()) == {11: (0, 3), 22: (0, 2)}
    assert read_state_vector(two.get_state()) == {11: 3, 22: 2}
    text = two.get("code", type=Text)
    text.insert(0, "more")
    del text[0:2]
    assert update_clock_ranges(two.get_update(two_state)) == {22: (2, 6)}
    with pytest.raises(ProtocolError):
        update_clock_ranges(b"\x01\x05\x01\x00\x04")


def test_long_typing_sessions_from_several_clients_all_arrive(room: YRoom) -> None:
    a, b = FakeClient(room, "a"), FakeClient(room, "b")
    rng = random.Random(11)
    for i in range(200):
        for client in (a, b):
            text = client.text.encode()
            client.edit(rng.randint(0, len(text)) if text.isascii() else 0, insert=rng.choice("xy世😀"))
            if i % 7 == 0 and len(client.ytext) > 4:
                client.edit(0, delete=len(client.text[0].encode()))  # one whole character
        pump_all(a, b)
    assert a.text == b.text == room.text
    assert not room._pending
