"""In-process Yjs peers for unit tests: a pycrdt document speaking the y-websocket protocol.

``FakeClient`` is what a browser tab running ``WebsocketProvider`` does, minus the socket:
it answers SyncStep1 with SyncStep2, applies updates, and sends its own local changes as
update frames (through :meth:`flush`, so tests decide when frames travel).
"""

from __future__ import annotations

from pycrdt import Doc, Text

from algoroom.yjs.protocol import (
    EMPTY_UPDATE,
    SYNC_STEP1,
    AwarenessEntry,
    AwarenessMessage,
    SyncMessage,
    decode_message,
    encode_awareness,
    encode_sync_step1,
    encode_sync_step2,
    encode_update,
)
from algoroom.yjs.room import YRoom


class RecordingPeer:
    """A peer that keeps every frame the room queued for it."""

    def __init__(self, name: str = "peer") -> None:
        self.name = name
        self.frames: list[bytes] = []

    def send(self, frame: bytes) -> None:
        self.frames.append(frame)

    def take(self) -> list[bytes]:
        frames, self.frames = self.frames, []
        return frames

    def __repr__(self) -> str:
        return f"<RecordingPeer {self.name}>"


class FakeClient(RecordingPeer):
    """A Yjs client joined to ``room``; :meth:`pump` processes what the room sent it."""

    def __init__(self, room: YRoom, name: str = "client", *, readonly: bool = False, client_id: int | None = None):
        super().__init__(name)
        self.room = room
        self.doc = Doc(client_id=client_id) if client_id is not None else Doc()
        self.ytext = self.doc.get("code", type=Text)
        self.awareness: dict[int, tuple[int, str]] = {}
        self.clock = 0
        self._synced_vector = self.doc.get_state()
        for frame in room.join(self, readonly=readonly):
            self.send(frame)
        room.receive(self, encode_sync_step1(self.doc.get_state()))

    @property
    def client_id(self) -> int:
        return self.doc.client_id

    @property
    def text(self) -> str:
        return str(self.ytext)

    def pump(self) -> None:
        """Handle every frame queued by the room (answers go straight back to the room)."""
        for frame in self.take():
            message = decode_message(frame)
            if isinstance(message, SyncMessage):
                if message.step == SYNC_STEP1:
                    self.room.receive(self, encode_sync_step2(self.doc.get_update(message.payload)))
                elif message.payload != EMPTY_UPDATE:
                    self.doc.apply_update(message.payload)
            elif isinstance(message, AwarenessMessage):
                for cid, clock, state in message.entries:
                    known = self.awareness.get(cid)
                    if known is None or clock > known[0] or (clock == known[0] and state == "null"):
                        self.awareness[cid] = (clock, state)
        self._synced_vector = self.doc.get_state()

    def flush(self) -> None:
        """Send local changes made since the last flush/pump as one update frame."""
        update = self.doc.get_update(self._synced_vector)
        self._synced_vector = self.doc.get_state()
        if update != EMPTY_UPDATE:
            self.room.receive(self, encode_update(update))

    def edit(self, index: int, delete: int = 0, insert: str = "") -> None:
        """Edit the local text at a UTF-8 byte index, then flush it to the room."""
        if delete:
            del self.ytext[index : index + delete]
        if insert:
            self.ytext.insert(index, insert)
        self.flush()

    def set_awareness(self, state: str) -> None:
        self.clock += 1
        self.room.receive(self, encode_awareness([AwarenessEntry(self.client_id, self.clock, state)]))

    def present(self) -> dict[int, str]:
        """Client IDs whose awareness state this client currently holds (non-null)."""
        return {cid: state for cid, (_, state) in self.awareness.items() if state != "null"}


def pump_all(*clients: FakeClient) -> None:
    """Deliver frames until nobody has anything queued."""
    while any(c.frames for c in clients):
        for client in clients:
            client.pump()
