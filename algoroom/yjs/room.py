"""One shared document and the y-websocket peers editing it: a plain, framework-neutral class.

:class:`YRoom` knows nothing of aiohttp. A *peer* is any hashable object with a
``send(frame: bytes)`` method that never blocks and never raises (a WebSocket connection's
bounded outgoing queue); the transport feeds each incoming binary frame to
:meth:`YRoom.receive` and calls :meth:`YRoom.leave` when the socket ends.

Threading: a room belongs to one event loop thread. No method awaits, so each call runs to
completion before another coroutine can touch the room: a received update is applied and
relayed to every peer atomically. Do not call a room from another thread.

Errors: a malformed frame, or an update or state vector the document refuses, raises
:class:`~algoroom.yjs.protocol.ProtocolError` to the caller (who closes that connection)
and leaves the document and every other peer untouched.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Hashable
from typing import Protocol

from pycrdt import Doc, Text

from . import textdiff
from .awareness import DEFAULT_MAX_IDS_PER_PEER, AwarenessRelay
from .protocol import (
    EMPTY_UPDATE,
    KEEPALIVE_FRAME,
    SYNC_STEP1,
    AuthMessage,
    AwarenessMessage,
    ClockRanges,
    ProtocolError,
    QueryAwarenessMessage,
    SyncMessage,
    decode_message,
    encode_sync_step1,
    read_state_vector,
    update_clock_ranges,
    encode_sync_step2,
    encode_update,
)

log = logging.getLogger("algoroom.yjs")

#: Updates held back because they start after a clock gap (see :meth:`YRoom._apply_from_peer`).
MAX_PENDING_UPDATES = 64

#: Name of the shared text in every session document.
TEXT_NAME = "code"

#: Origins of changes that come from no peer (passed to ``on_change``).
ORIGIN_SERVER = "server"
ORIGIN_LOAD = "load"
ORIGIN_SEED = "seed"


class Peer(Hashable, Protocol):
    """Where a room sends frames. ``send`` must queue and return at once, never raise."""

    def send(self, frame: bytes, /) -> None: ...


OnChange = Callable[[object], None]


class _PeerInfo:
    __slots__ = ("readonly", "last_sent")

    def __init__(self, readonly: bool, now: float) -> None:
        self.readonly = readonly
        self.last_sent = now


def _is_rust_panic(exc: BaseException) -> bool:
    # pyo3 turns a Rust panic into PanicException, which derives from BaseException.
    return type(exc).__name__ == "PanicException"


class YRoom:
    """A pycrdt document with a ``Text`` named ``code``, and the peers syncing it.

    ``on_change(origin)`` is called after every transaction that changed the document:
    ``origin`` is the peer whose update it was, or the ``origin`` passed to
    :meth:`apply_text` / :meth:`apply_update` (default ``"server"``), ``"load"`` for
    :meth:`load` and ``"seed"`` for :meth:`seed`. It runs synchronously; an integration uses
    it to schedule work (coalesced ``code_update`` broadcasts, debounced persistence), not to
    do I/O. Exceptions from it are logged, never propagated.
    """

    def __init__(
        self,
        name: str = "",
        *,
        on_change: OnChange | None = None,
        max_awareness_ids_per_peer: int = DEFAULT_MAX_IDS_PER_PEER,
    ) -> None:
        self.name = name
        self.on_change = on_change
        self.doc = Doc()
        self._text = self.doc.get(TEXT_NAME, type=Text)
        #: str(self._text), kept until the next change: reading a pycrdt Text costs a transaction.
        self._text_value: str | None = ""
        self._peers: dict[Peer, _PeerInfo] = {}
        self.awareness: AwarenessRelay[Peer] = AwarenessRelay(max_awareness_ids_per_peer)
        self._origin: object = None
        self._changed = False
        # Integrated clock per client, kept from each transaction's own update (parsing the
        # whole state vector per update would cost ~150 us with 50 clients).
        self._clocks: dict[int, int] = {}
        #: Peer updates held for missing structs: (update, sender, its clock ranges).
        self._pending: list[tuple[bytes, object, ClockRanges]] = []
        # Set while the room itself edits the text: that transaction's only new structs are
        # under the document's own client ID, so the observer need not parse its update.
        self._own_edit = False
        self._update_ranges: ClockRanges | None = None
        self._subscription = self.doc.observe(self._on_transaction)
        self._closed = False

    # ------------------------------------------------------------------ peers

    @property
    def peers(self) -> tuple[Peer, ...]:
        return tuple(self._peers)

    def __len__(self) -> int:
        return len(self._peers)

    def join(self, peer: Peer, *, readonly: bool = False) -> list[bytes]:
        """Register ``peer``; returns the frames to send it first, in order.

        SyncStep1 (so that the client answers with whatever it has that we lack, e.g. its
        offline edits) and, if anyone is present, every awareness state.
        """
        self._check_open()
        self._peers[peer] = _PeerInfo(readonly, time.monotonic())
        frames = [encode_sync_step1(self.doc.get_state())]
        snapshot = self.awareness.snapshot_frame()
        if snapshot is not None:
            frames.append(snapshot)
        return frames

    def leave(self, peer: Peer) -> int:
        """Forget ``peer`` and remove its awareness states for everyone; returns peers left."""
        if self._peers.pop(peer, None) is None:
            return len(self._peers)
        removal = self.awareness.remove_peer(peer)
        if removal is not None:
            self._broadcast(removal)
        return len(self._peers)

    def receive(self, peer: Peer, frame: bytes) -> None:
        """Handle one binary frame from ``peer``: reply, apply, relay.

        Raises :class:`ProtocolError` for anything malformed; the room is unchanged then.
        """
        info = self._peers.get(peer)
        if info is None:
            raise ValueError("receive() from a peer that has not joined (or has left) the room")
        message = decode_message(frame)
        if type(message) is SyncMessage:
            if message.step == SYNC_STEP1:
                try:
                    update = self.doc.get_update(message.payload)
                except ValueError as exc:
                    raise ProtocolError(f"invalid state vector: {exc}") from None
                self._send(peer, info, encode_sync_step2(update))
            elif not info.readonly and message.payload != EMPTY_UPDATE:
                self._apply_from_peer(message.payload, peer)
        elif type(message) is AwarenessMessage:
            self.awareness.apply(peer, message.entries)
            # Relay to everyone, the sender included: that echo is the application message
            # y-websocket v3 needs at least every 30 s (clients renew their state every 15 s).
            self._broadcast(frame if isinstance(frame, bytes) else bytes(frame))
        elif type(message) is QueryAwarenessMessage:
            snapshot = self.awareness.snapshot_frame()
            if snapshot is not None:
                self._send(peer, info, snapshot)
        elif type(message) is AuthMessage:
            pass  # only servers send auth messages; nothing to do with a client's

    # ------------------------------------------------------------------ document

    @property
    def text(self) -> str:
        """The current code."""
        value = self._text_value
        if value is None:
            value = self._text_value = str(self._text)
        return value

    def apply_update(self, update: bytes, origin: object = ORIGIN_SERVER) -> bool:
        """Apply a Yjs update from outside the room's peers (e.g. another process via Redis).

        Relays it to every peer (except ``origin`` if that is a peer); returns whether the
        document changed. Raises :class:`ProtocolError` if the update is invalid.
        """
        self._check_open()
        if update == EMPTY_UPDATE:
            return False
        return self._apply(update, origin)

    def apply_text(self, new_text: str, origin: object = ORIGIN_SERVER) -> bool:
        """Make the text ``new_text`` by a minimal diff, in one transaction.

        Remote cursors outside the changed regions stay where they are. Returns whether
        anything changed. :class:`ValueError` if ``new_text`` is not encodable (lone
        surrogates).
        """
        self._check_open()
        new_text.encode("utf-8")  # refuse lone surrogates before touching the document
        old = self.text
        edits = textdiff.to_utf8(old, textdiff.diff(old, new_text))
        if not edits:
            return False
        self._origin, self._changed, self._own_edit = origin, False, True
        try:
            with self.doc.transaction(origin=origin):
                _apply_edits(self._text, edits)
        finally:
            self._origin, self._own_edit = None, False
        self._text_value = new_text
        return self._after_change(origin)

    def apply_text_from_base(self, base_state: bytes, new_text: str, origin: object = ORIGIN_SERVER) -> bool:
        """Three-way merge: apply the change "base text -> ``new_text``" to the current doc.

        ``base_state`` is a state of this document (from :meth:`encode_state`) that the
        writer started from. The diff is made in a fork of that state, and only the fork's
        new operations are merged here, so edits made since the base (by anyone, anywhere
        else in the text) are kept instead of being overwritten. Returns whether the document
        changed. :class:`ValueError` if ``base_state`` is not a valid update or ``new_text``
        not encodable.
        """
        self._check_open()
        new_text.encode("utf-8")
        fork = Doc()
        try:
            fork.apply_update(base_state)
        except ValueError as exc:
            raise ValueError(f"invalid base state: {exc}") from None
        fork_text = fork.get(TEXT_NAME, type=Text)
        base_vector = fork.get_state()
        base_text = str(fork_text)
        edits = textdiff.to_utf8(base_text, textdiff.diff(base_text, new_text))
        if not edits:
            return False
        with fork.transaction():
            _apply_edits(fork_text, edits)
        return self._apply(fork.get_update(base_vector), origin)

    def encode_state(self) -> bytes:
        """The whole document as one compacted update (merged, deleted content collected)."""
        return self.doc.get_update()

    def state_vector(self) -> bytes:
        return self.doc.get_state()

    def load(self, state: bytes) -> None:
        """Apply a stored state (normally into the fresh room, before anyone joins).

        :class:`ProtocolError` if it is not a valid update.
        """
        self._check_open()
        if state and state != EMPTY_UPDATE:
            self._apply(state, ORIGIN_LOAD)

    def seed(self, text: str) -> bool:
        """Give an empty document its initial text, exactly once; returns whether it did.

        The insert is made under a client ID derived from the text, so two servers seeding
        the same text independently produce the very same Yjs item, which Yjs merges into
        one copy instead of duplicating the code.
        """
        self._check_open()
        if not text or self.doc.get_state() != b"\x00":
            return False
        text.encode("utf-8")
        seed_doc = Doc(client_id=seed_client_id(text))
        seed_doc.get(TEXT_NAME, type=Text).insert(0, text)
        return self._apply(seed_doc.get_update(), ORIGIN_SEED)

    # ------------------------------------------------------------------ upkeep

    def keepalive(self, idle: float = 15.0, now: float | None = None) -> int:
        """Send a no-op awareness frame to every peer that got nothing for ``idle`` seconds.

        Call every few seconds: y-websocket v3 clients reconnect after 30 s without an
        application message (WebSocket pings don't count), which a client whose own
        awareness state is ``null`` would otherwise hit. Returns how many peers it pinged.
        """
        now = time.monotonic() if now is None else now
        stale = [(peer, info) for peer, info in self._peers.items() if now - info.last_sent >= idle]
        for peer, info in stale:
            self._send(peer, info, KEEPALIVE_FRAME)
        return len(stale)

    def close(self) -> None:
        """Drop every peer (without messages) and release the document observer."""
        if self._closed:
            return
        self._closed = True
        self._peers.clear()
        self._pending.clear()
        self.awareness.clear()
        self.doc.unobserve(self._subscription)
        # Drop the observer here, on the loop's thread: pycrdt subscriptions are unsendable,
        # and a garbage collection run by another thread (the SQLite writer, say) that found
        # it in a reference cycle would raise while dropping it.
        self._subscription = None

    @property
    def closed(self) -> bool:
        return self._closed

    # ------------------------------------------------------------------ internals

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"room {self.name!r} is closed")

    def _apply_from_peer(self, update: bytes, peer: Peer) -> None:
        """Apply a peer's update, unless it starts after a gap in some client's clocks.

        Yjs keeps such an update pending until the missing structs arrive; Yrs instead shows
        its items at once without emitting them, so the server's text would differ from the
        clients'. Legitimately this happens when a reconnecting client types before its
        SyncStep2 (which carries the gap) went out: we hold the update and retry it after
        every change. Crafted gaps just stay pending (bounded), as with Yjs.
        """
        ranges = update_clock_ranges(update)
        if self._has_gap(ranges):
            # The fast bookkeeping says "gap": confirm against the document's own state vector
            # (authoritative, ~150 us with 50 clients, so only here) and resynchronise with it.
            self._resync_clocks()
            if self._has_gap(ranges):
                if len(self._pending) >= MAX_PENDING_UPDATES:
                    raise ProtocolError("too many updates waiting for missing structs")
                self._pending.append((update, peer, ranges))
                return
        self._apply(update, peer, ranges)
        self._retry_pending()

    def _has_gap(self, ranges: ClockRanges) -> bool:
        """Whether some client's range starts after the clock we know for it."""
        clocks = self._clocks
        return any(start > clocks.get(client, 0) for client, (start, _) in ranges.items())

    def _resync_clocks(self) -> None:
        self._clocks.update(read_state_vector(self.doc.get_state()))

    def _retry_pending(self) -> None:
        """Apply the held updates whose gaps are filled now.

        The clocks are exact for every client but our own (forgotten on each own edit), so
        the state vector is read only when a held update waits on our client ID, and then
        once per call: updates stuck for good (crafted gaps) cost each change a clock check
        apiece, not a state-vector decode apiece.
        """
        if not self._pending:
            return
        own = self.doc.client_id
        if own not in self._clocks and any(own in ranges for _, _, ranges in self._pending):
            self._resync_clocks()
        progress = True
        while self._pending and progress:
            progress = False
            for entry in tuple(self._pending):
                update, origin, ranges = entry
                if not self._has_gap(ranges):
                    self._pending.remove(entry)
                    origin = origin if origin in self._peers else ORIGIN_SERVER
                    try:
                        self._apply(update, origin, ranges)
                    except ProtocolError:
                        continue
                    progress = True

    def _apply(self, update: bytes, origin: object, ranges: ClockRanges | None = None) -> bool:
        """Apply ``update``; ``ranges``: its clock ranges, if already parsed (saves a second parse)."""
        self._origin, self._changed, self._update_ranges = origin, False, ranges
        try:
            self.doc.apply_update(update)
        except ValueError as exc:
            raise ProtocolError(f"invalid update: {exc}") from None
        except BaseException as exc:
            if not _is_rust_panic(exc):
                raise
            log.error("pycrdt panicked applying an update to room %r: %s", self.name, exc)
            raise ProtocolError("update could not be applied") from None
        finally:
            self._origin, self._update_ranges = None, None
        return self._after_change(origin)

    def _on_transaction(self, event) -> None:
        # Runs inside the transaction's commit: it must not read the document (pycrdt
        # refuses), only forward the update it was handed.
        update = event.update
        if update == EMPTY_UPDATE:
            return
        self._changed = True
        self._text_value = None
        clocks = self._clocks
        if self._own_edit:
            # Our own clock moved on: forget it, and a peer update that names our client ID
            # (rare) makes _ranges_without_gap look it up in the document's state vector.
            clocks.pop(self.doc.client_id, None)
        else:
            # A gap-free update's own ranges bound what it integrated, so they do as well as
            # the (possibly smaller) update Yrs hands us here.
            ranges = self._update_ranges
            for client, (_, end) in (update_clock_ranges(update) if ranges is None else ranges).items():
                if end > clocks.get(client, 0):
                    clocks[client] = end
        if not self._peers:
            return
        origin = self._origin
        frame = encode_update(update)
        for peer, info in tuple(self._peers.items()):
            if peer is not origin:
                self._send(peer, info, frame)

    def _after_change(self, origin: object) -> bool:
        changed, self._changed = self._changed, False
        if changed and self.on_change is not None:
            try:
                self.on_change(origin)
            except Exception:
                log.exception("on_change callback of room %r failed", self.name)
        return changed

    def _broadcast(self, frame: bytes) -> None:
        for peer, info in tuple(self._peers.items()):
            self._send(peer, info, frame)

    def _send(self, peer: Peer, info: _PeerInfo, frame: bytes) -> None:
        info.last_sent = time.monotonic()
        try:
            peer.send(frame)
        except Exception:
            log.exception("peer %r of room %r failed to queue a frame", peer, self.name)


def _apply_edits(text: Text, edits: list[textdiff.Edit]) -> None:
    """Apply descending UTF-8 edits to a pycrdt ``Text`` (inside the caller's transaction)."""
    for index, delete, insert in edits:
        if delete and insert:
            text[index : index + delete] = insert  # one call: removes, then inserts at index
        elif delete:
            del text[index : index + delete]
        else:
            text.insert(index, insert)


def seed_client_id(text: str) -> int:
    """A Yjs client ID (uint32, like the ones yjs draws) determined by the seed text."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=4).digest(), "big")
