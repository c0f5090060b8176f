"""The Yjs documents of this process: each session's code as a CRDT, loaded on demand.

A session's code lives in a Yjs document (a :class:`~algoroom.yjs.YRoom`), the single
source of truth for everyone: y-websocket clients edit it directly, ``PUT /code`` and the
JSON ``code_update`` message apply their new text to it as a minimal diff (or merged
against the ``baseRevision`` they started from), and execution runs its text.

Persistence and revisions. Every save stores the document's merged state together with
its text and, if the text changed, the store bumps the revision. Saves are guarded by the
revision this process last saw (``expected_revision``): when another process saved in
between, we reload the stored state, merge it (CRDT merges never lose edits) and retry.
A ``PUT`` is saved before it is answered. Yjs keystrokes are saved coalesced: within
``flush_delay`` of a change (50 ms for ordinary documents, 1 s for big ones), and the
save's new revision is what ``code_update`` then tells JSON clients, so a fast typist
produces at most one ``code_update`` per flush, always ending with the final text.

Several processes. With Redis, every local change is relayed as a Yjs update (and every
awareness change as an awareness frame) to the other processes, whose replicas apply
them; only the process where a change happened saves it.

Memory. A document with no Yjs connection is saved and unloaded after ``unload_after``
seconds without use; stored states are compacted (the merged state, never a log).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import OrderedDict

from .cluster import LocalCluster
from .errors import RevisionConflict, SessionNotFound
from .messages import code_update_message
from .sessions import Session
from .store.base import SessionStore
from .yjs import ORIGIN_LOAD, Peer, ProtocolError, YRoom
from .yjs.protocol import KEEPALIVE_FRAME

log = logging.getLogger("algoroom.documents")

KIND_YJS = b"y"

#: Documents whose state is larger than this are flushed at most once a second.
BIG_DOCUMENT_BYTES = 256 * 1024
#: Base states kept per document for ``baseRevision`` merges (the most recent ones).
BASE_STATES_KEPT = 32
BASE_STATES_MAX_BYTES = 4 * 1024 * 1024
#: Saves racing other processes' saves retry this long (with jittered backoff) before 409.
SAVE_RETRY_SECONDS = 10.0


class _RelayPeer:
    """The other processes, seen by a room as one more peer.

    Whatever the room sends it (updates and awareness changes made here) goes to Redis;
    frames from Redis are fed back to the room as this peer's, so they reach the local
    peers but are not sent back out.
    """

    __slots__ = ("session_id", "_cluster", "receiving")

    def __init__(self, session_id: str, cluster: LocalCluster) -> None:
        self.session_id = session_id
        self._cluster = cluster
        self.receiving = False

    def send(self, frame: bytes) -> None:
        if self.receiving or frame == KEEPALIVE_FRAME:
            return
        self._cluster.relay(KIND_YJS, self.session_id, frame)


class Document:
    """One loaded session document and its persistence bookkeeping."""

    def __init__(self, manager: DocumentManager, session: Session) -> None:
        self.manager = manager
        self.session_id = session.id
        #: The session as last read or saved: its revision guards our saves, and a no-op
        #: edit answers with it.
        self.session = session
        self.room = YRoom(session.id, on_change=self._on_change, max_awareness_ids_per_peer=1024)
        self.relay = _RelayPeer(session.id, manager.cluster)
        # Alone, the relay would be a peer that costs every change an encoded frame for nobody.
        self._relayed = manager.cluster.relays
        if self._relayed:
            self.room.join(self.relay)
        self.lock = asyncio.Lock()
        self.dirty = False
        self.last_used = time.monotonic()
        #: revision -> encoded state at that revision, for merges against a base revision.
        self.base_states: OrderedDict[int, bytes] = OrderedDict()
        self._flush: asyncio.TimerHandle | None = None
        self._state_size = 0

    @property
    def text(self) -> str:
        return self.room.text

    @property
    def revision(self) -> int:
        return self.session.revision

    @property
    def language(self) -> str:
        return self.session.language

    @property
    def connections(self) -> int:
        return len(self.room) - self._relayed  # the relay peer is not a participant

    def remember(self, revision: int, state: bytes) -> None:
        self._state_size = len(state)
        self.base_states[revision] = state
        self.base_states.move_to_end(revision)
        while len(self.base_states) > BASE_STATES_KEPT or (
            len(self.base_states) > 1 and sum(map(len, self.base_states.values())) > BASE_STATES_MAX_BYTES
        ):
            self.base_states.popitem(last=False)

    def _on_change(self, origin: object) -> None:
        self.last_used = time.monotonic()
        if origin is self.relay or origin == ORIGIN_LOAD:
            return  # another process saves its own changes; a load is already stored
        self.dirty = True
        if self._flush is None:
            delay = self.manager.flush_delay if self._state_size < BIG_DOCUMENT_BYTES else 1.0
            self._flush = asyncio.get_running_loop().call_later(delay, self._start_flush)

    def _start_flush(self) -> None:
        self._flush = None
        self.manager.spawn(self.save(), f"algoroom-save-{self.session_id}")

    async def save(self) -> Session | None:
        """Persist if changed, then tell JSON sockets the new text and revision."""
        async with self.lock:
            if not self.dirty:
                return None
            session = await self.manager.persist(self)
        self.manager.cluster.broadcast(session.id, code_update_message(session), revision=session.revision)
        return session

    def cancel_flush(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None


class DocumentManager:
    def __init__(
        self,
        store: SessionStore,
        cluster: LocalCluster,
        *,
        flush_delay: float = 0.05,
        unload_after: float = 30.0,
    ) -> None:
        self.store = store
        self.cluster = cluster
        self.flush_delay = flush_delay
        self.unload_after = unload_after
        self._documents: dict[str, Document] = {}
        self._loading: dict[str, asyncio.Future[Document]] = {}
        self._early_frames: dict[str, list[bytes]] = {}
        #: Peers asking to join a document still loading, in the order they asked.
        self._joiners: dict[str, list[Peer]] = {}
        self._tasks: set[asyncio.Task[object]] = set()
        cluster.on_remote(KIND_YJS, self._on_remote_frame)

    # -- lifecycle ---------------------------------------------------------------------

    def spawn(self, coro, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("document task %s failed", task.get_name(), exc_info=task.exception())

    async def close(self) -> None:
        """Save every changed document, then drop them all (graceful shutdown)."""
        for document in list(self._documents.values()):
            document.cancel_flush()
            try:
                await document.save()
            except Exception:  # noqa: BLE001 - keep saving the others
                log.exception("could not save the document of session %s at shutdown", document.session_id)
            document.room.close()
        self._documents.clear()
        for task in tuple(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def sweep(self) -> None:
        """Save and unload documents nobody has used for ``unload_after`` seconds."""
        now = time.monotonic()
        for document in list(self._documents.values()):
            if document.connections == 0 and now - document.last_used >= self.unload_after:
                document.cancel_flush()
                try:
                    await document.save()
                except SessionNotFound:
                    document.dirty = False  # deleted meanwhile: nothing to keep
                if document.connections == 0 and not document.dirty:
                    self._documents.pop(document.session_id, None)
                    document.room.close()

    def loaded(self, session_id: str) -> Document | None:
        return self._documents.get(session_id)

    def keepalive(self) -> None:
        for document in self._documents.values():
            document.room.keepalive()

    # -- loading -----------------------------------------------------------------------

    async def open(self, session_id: str, *, join: Peer | None = None) -> Document:
        """The session's document, loaded (once, however many callers ask at once).

        ``join``: a peer to add to the document's room, in the order the callers asked,
        even while the document loads (callers that wait for a load would otherwise resume
        after later ones that found it loaded, and a room serves its peers in join order).
        Pair with :meth:`leave`.
        """
        document = self._documents.get(session_id)
        if document is not None:
            document.last_used = time.monotonic()
            if join is not None:
                _join(document, join)
            return document
        pending = self._loading.get(session_id)
        if pending is not None:
            if join is not None:
                self._joiners[session_id].append(join)
            return await asyncio.shield(pending)
        future: asyncio.Future[Document] = asyncio.get_running_loop().create_future()
        self._loading[session_id] = future
        self._early_frames[session_id] = []
        self._joiners[session_id] = [join] if join is not None else []
        try:
            document = await self._load(session_id)
            for frame in self._early_frames.pop(session_id, ()):
                self._feed_remote(document, frame)
            for peer in self._joiners.pop(session_id, ()):
                _join(document, peer)
            self._documents[session_id] = document
            future.set_result(document)
            return document
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: waiting callers get it, nobody else must
            raise
        finally:
            self._loading.pop(session_id, None)
            self._early_frames.pop(session_id, None)
            self._joiners.pop(session_id, None)

    def leave(self, session_id: str, peer: Peer) -> None:
        """Take ``peer`` out of the document's room, or out of the queue to join it."""
        joiners = self._joiners.get(session_id)
        if joiners is not None and peer in joiners:
            joiners.remove(peer)
            return
        document = self._documents.get(session_id)
        if document is not None:
            document.room.leave(peer)

    async def _read_stored(self, session_id: str) -> tuple[Session, bytes | None]:
        """The session and its document state as one save left them.

        A save writes both at once, but they are read one after the other: the session is
        read again after the state, and both again if a save landed in between. Otherwise
        the older code would look like code written without the document, and loading would
        write it back over the newer save.
        """
        session = await self.store.get(session_id)
        while True:
            if session is None:
                raise SessionNotFound(session_id)
            state = await self.store.load_document(session_id)
            after = await self.store.get(session_id)
            if after is not None and after.revision == session.revision:
                return session, state
            session = after

    async def _load(self, session_id: str) -> Document:
        session, state = await self._read_stored(session_id)
        document = Document(self, session)
        try:
            if state is None:
                document.room.seed(session.code)
                document.dirty = bool(session.code)
            else:
                document.room.load(state)
                if document.text != session.code:
                    # The code was written without the document (a language change, or a crash
                    # between two writes): the stored code wins, applied as a minimal diff.
                    document.room.apply_text(session.code, origin=ORIGIN_LOAD)
                    document.dirty = True
            document.remember(session.revision, document.room.encode_state())
            if document.dirty:
                async with document.lock:
                    await self.persist(document)
        except BaseException:
            document.cancel_flush()
            document.room.close()
            raise
        return document

    # -- saving ------------------------------------------------------------------------

    async def persist(self, document: Document, target_text: str | None = None) -> Session:
        """Save the document's state and text, merging another process's save if needed.

        ``target_text``: the text a whole-buffer replacement asked for. After merging a
        concurrent save it is applied again, so the replacement wins as a whole (the last
        writer wins, as with a plain ``PUT``) instead of being interleaved with the other.
        The caller holds ``document.lock``.
        """
        backoff = _ConflictBackoff()
        while backoff.again():
            if backoff.attempts > 1 and target_text is not None:
                document.room.apply_text(target_text)
            state, text = document.room.encode_state(), document.text
            document.dirty = False
            try:
                session = await self.store.save_document(
                    document.session_id, state, text, expected_revision=document.revision
                )
            except RevisionConflict:
                await self._merge_stored(document)
                await backoff.wait()
                continue
            except BaseException:
                document.dirty = True
                raise
            document.session = session
            document.remember(session.revision, state)
            return session
        document.dirty = True
        raise RevisionConflict(document.session_id, document.revision, -1)

    async def _merge_stored(self, document: Document, session: Session | None = None) -> None:
        """Merge the stored state into the document; ``session``: the stored session, if just read."""
        if session is None:
            session = await self.store.get(document.session_id)
        if session is None:
            raise SessionNotFound(document.session_id)
        state = await self.store.load_document(document.session_id)
        if state is not None:
            document.room.apply_update(state, origin=ORIGIN_LOAD)
        document.session = session
        document.dirty = True

    # -- edits from REST and JSON clients ----------------------------------------------

    async def apply_text(
        self,
        session_id: str,
        text: str,
        language: str | None = None,
        *,
        expected_revision: int | None = None,
        base_revision: int | None = None,
    ) -> Session:
        """Make the document's text ``text`` and save it before returning.

        ``expected_revision`` (If-Match) refuses the edit if anything changed since;
        ``base_revision`` merges the edit against the text of that revision, keeping
        whatever others changed since. A new ``language`` is stored with the text, in the
        same revision.
        """
        document = await self.open(session_id)
        async with document.lock:
            if expected_revision is not None and expected_revision != document.revision:
                await self._refresh_revision(document)
                if expected_revision != document.revision:
                    raise RevisionConflict(session_id, expected_revision, document.revision)
            unchanged = text == document.text and (language is None or language == document.language)
            # Only this process's view can prove an edit a no-op: with other processes, the
            # document may show their unsaved-here edits and ``session`` an older revision,
            # so the edit is saved (the store keeps the revision if the code is the same).
            if unchanged and base_revision is None and not document.dirty and not self.cluster.relays:
                return document.session  # nothing to change or save
            if language is not None and language != document.language:
                await self._store_language(document, text, language)
            if base_revision is not None and base_revision != document.revision:
                base = document.base_states.get(base_revision)
                if base is None:
                    raise RevisionConflict(session_id, base_revision, document.revision)
                document.room.apply_text_from_base(base, text)
                target = None
            else:
                document.room.apply_text(text)
                target = text
            document.cancel_flush()
            document.dirty = True
            return await self.persist(document, target)

    async def _store_language(self, document: Document, text: str, language: str) -> None:
        """Write text and language in one revision; the document state follows in persist()."""
        backoff = _ConflictBackoff()
        while backoff.again():
            try:
                session = await self.store.update_code(
                    document.session_id, text, language, expected_revision=document.revision
                )
            except RevisionConflict:
                await self._merge_stored(document)
                await backoff.wait()
                continue
            document.session = session
            return
        raise RevisionConflict(document.session_id, document.revision, -1)

    async def _refresh_revision(self, document: Document) -> None:
        session = await self.store.get(document.session_id)
        if session is None:
            raise SessionNotFound(document.session_id)
        if session.revision != document.revision:
            await self._merge_stored(document, session)

    def forget(self, session_id: str) -> None:
        """Drop a deleted session's document without saving it."""
        document = self._documents.pop(session_id, None)
        if document is not None:
            document.cancel_flush()
            document.dirty = False
            document.room.close()

    # -- other processes -----------------------------------------------------------------

    def _on_remote_frame(self, session_id: str, frame: bytes) -> None:
        document = self._documents.get(session_id)
        if document is not None:
            self._feed_remote(document, frame)
        elif session_id in self._early_frames:
            self._early_frames[session_id].append(frame)

    @staticmethod
    def _feed_remote(document: Document, frame: bytes) -> None:
        document.relay.receiving = True
        try:
            document.room.receive(document.relay, frame)
        except ProtocolError as error:
            log.warning("ignoring a bad Yjs frame relayed for session %s: %s", document.session_id, error)
        finally:
            document.relay.receiving = False


def _join(document: Document, peer: Peer) -> None:
    for frame in document.room.join(peer):
        peer.send(frame)


class _ConflictBackoff:
    """Retry pacing for saves that lost a race: jittered, growing from 1 ms to 50 ms."""

    def __init__(self) -> None:
        self.attempts = 0
        self._deadline = time.monotonic() + SAVE_RETRY_SECONDS
        self._delay = 0.001

    def again(self) -> bool:
        self.attempts += 1
        return self.attempts == 1 or time.monotonic() < self._deadline

    async def wait(self) -> None:
        await asyncio.sleep(self._delay * random.random())
        self._delay = min(self._delay * 2, 0.05)
