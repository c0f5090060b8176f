"""DocumentManager on its own: who joins a document's room, and in which order."""

from __future__ import annotations

import asyncio

import pytest

from algoroom.cluster import LocalCluster
from algoroom.documents import DocumentManager
from algoroom.errors import SessionNotFound
from algoroom.hub import SessionHub
from algoroom.sessions import Session
from algoroom.store.memory import MemoryStore
from algoroom.yjs import YRoom
from algoroom.yjs.protocol import encode_update

from .yjs.fakes import RecordingPeer


class GatedStore(MemoryStore):
    """A memory store whose document loads wait until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def load_document(self, session_id: str) -> bytes | None:
        await self.gate.wait()
        return await super().load_document(session_id)


@pytest.fixture
async def store() -> GatedStore:
    return GatedStore()


@pytest.fixture
async def manager(store: GatedStore):
    manager = DocumentManager(store, LocalCluster(SessionHub()))
    yield manager
    await manager.close()


async def new_session(store: GatedStore) -> str:
    session = Session.new("python")
    await store.create(session)
    return session.id


async def test_peers_join_in_the_order_they_asked_even_while_the_document_loads(store, manager):
    sid = await new_session(store)
    a, b, c, late = (RecordingPeer(name) for name in ("a", "b", "c", "late"))
    loading = asyncio.create_task(manager.open(sid, join=a))
    waiting = [asyncio.create_task(manager.open(sid, join=peer)) for peer in (b, c)]
    await asyncio.sleep(0)  # a yield, not a wait: every task is now parked on the load
    store.gate.set()
    document = await loading
    # The document is published while b and c have not resumed yet: a socket arriving now
    # must still come after them.
    assert await manager.open(sid, join=late) is document
    assert await asyncio.gather(*waiting) == [document, document]
    assert document.room.peers == (a, b, c, late)
    assert all(peer.frames for peer in (a, b, c, late))  # each got its SyncStep1


async def test_a_caller_gone_while_waiting_never_joins(store, manager):
    sid = await new_session(store)
    a, gone = RecordingPeer("a"), RecordingPeer("gone")
    loading = asyncio.create_task(manager.open(sid, join=a))
    waiting = asyncio.create_task(manager.open(sid, join=gone))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    manager.leave(sid, gone)  # what the socket handler does on its way out
    store.gate.set()
    document = await loading
    assert document.room.peers == (a,)
    assert gone.frames == []
    manager.leave(sid, a)
    assert document.room.peers == ()


async def test_joiners_of_an_unknown_session_get_the_error(store, manager):
    peer = RecordingPeer()
    store.gate.set()
    with pytest.raises(SessionNotFound):
        await manager.open("no-such-session", join=peer)
    assert peer.frames == []


class RelayingCluster(LocalCluster):
    """Stands for the Redis cluster: other processes exist, and the test plays one of them."""

    relays = True

    def deliver(self, kind: bytes, session_id: str, payload: bytes) -> None:
        self._handlers[kind](session_id, payload)


async def test_a_put_matching_a_relayed_text_is_still_saved_as_a_new_revision(store):
    # Another process's edits can leave our document showing, unsaved by us, exactly the
    # text a PUT then asks for. That PUT is a change to the stored code, not a no-op.
    cluster = RelayingCluster(SessionHub())
    manager = DocumentManager(store, cluster)
    store.gate.set()
    try:
        sid = await new_session(store)
        first = await manager.apply_text(sid, "1")
        document = manager.loaded(sid)
        elsewhere = YRoom()
        elsewhere.load(document.room.encode_state())
        before = elsewhere.state_vector()
        elsewhere.apply_text("16")
        cluster.deliver(b"y", sid, encode_update(elsewhere.doc.get_update(before)))
        assert document.text == "16"
        session = await manager.apply_text(sid, "16")
        assert (session.revision, session.code) == (first.revision + 1, "16")
        assert (await store.get(sid)).code == "16"
    finally:
        await manager.close()


class SaveDuringLoadStore(MemoryStore):
    """A memory store where another process's save lands between a load's two reads."""

    def __init__(self, racing_save) -> None:
        super().__init__()
        self.racing_save = racing_save

    async def load_document(self, session_id: str) -> bytes | None:
        racing_save, self.racing_save = self.racing_save, None
        if racing_save is not None:
            await racing_save(self)
        return await super().load_document(session_id)


async def test_a_save_landing_while_a_document_loads_is_kept():
    writer = YRoom("other process")
    writer.apply_text("one")
    first = writer.encode_state()
    writer.apply_text("two")
    second = writer.encode_state()
    session = Session.new("python")

    async def racing_save(store: MemoryStore) -> None:
        await store.save_document(session.id, second, "two", expected_revision=1)

    store = SaveDuringLoadStore(racing_save)
    await store.create(session)
    await store.save_document(session.id, first, "one", expected_revision=0)
    manager = DocumentManager(store, LocalCluster(SessionHub()))
    try:
        document = await manager.open(session.id)
        assert document.text == "two"
        assert document.revision == 2
        stored = await store.get(session.id)
        assert (stored.code, stored.revision) == ("two", 2)  # no revision 3 putting "one" back
    finally:
        await manager.close()
        writer.close()
