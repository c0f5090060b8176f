"""Relay-side awareness bookkeeping: who announced which client IDs, and their latest state.

The server has no awareness state of its own (it is not a participant, so it never shows up
as a cursor). It only remembers, per connection, which client IDs that connection announced
and the latest (clock, state) of each, so that:

- a newcomer and a ``queryAwareness`` get every current state at once;
- when a connection closes, the states it owned are removed for everyone immediately, as
  one message with ``state = null`` and ``clock + 1`` (the y-protocols rule for "newer"),
  instead of lingering as ghost cursors until each client's 30 s timeout.

A client ID belongs to the connection that announced it most recently: a client that
reconnects before the server noticed its old socket die keeps its cursor when the old
socket is finally cleaned up. States are kept as their JSON text and never parsed.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

from .protocol import AwarenessEntry, ProtocolError, encode_awareness

P = TypeVar("P", bound=Hashable)

#: More client IDs than this from one connection is abuse, not a browser tab.
DEFAULT_MAX_IDS_PER_PEER = 64


class AwarenessRelay(Generic[P]):
    """Latest awareness state per client ID, and which peer owns each ID."""

    def __init__(self, max_ids_per_peer: int = DEFAULT_MAX_IDS_PER_PEER) -> None:
        self._max_ids = max_ids_per_peer
        self._states: dict[int, tuple[int, str]] = {}  # client_id -> (clock, JSON), non-null only
        self._owner: dict[int, P] = {}
        self._owned: dict[P, set[int]] = {}

    def __len__(self) -> int:
        return len(self._states)

    @property
    def states(self) -> dict[int, tuple[int, str]]:
        """A copy of ``{client_id: (clock, json_state)}`` for every present client."""
        return dict(self._states)

    def client_ids(self, peer: P) -> frozenset[int]:
        return frozenset(self._owned.get(peer, ()))

    def apply(self, peer: P, entries: Iterable[AwarenessEntry]) -> bool:
        """Record what ``peer`` announced; returns whether any known state changed.

        Follows y-protocols' ``applyAwarenessUpdate``: an entry wins if its clock is newer,
        or equal with a ``null`` state (a removal beats an update of the same clock).
        Stale entries are ignored here (the caller still relays the frame: clients apply
        the same rule, so relaying it unchanged is harmless).
        """
        changed = False
        for client_id, clock, state in entries:
            known = self._states.get(client_id)
            removed = state == "null"
            if known is not None and not (clock > known[0] or (clock == known[0] and removed)):
                continue
            if removed:
                if known is not None:
                    del self._states[client_id]
                    changed = True
                self._disown(client_id)
                continue
            self._states[client_id] = (clock, state)
            changed = True
            if self._owner.get(client_id) is not peer:
                self._disown(client_id)
                owned = self._owned.setdefault(peer, set())
                if len(owned) >= self._max_ids:
                    del self._states[client_id]
                    raise ProtocolError(f"a connection may announce at most {self._max_ids} awareness client IDs")
                owned.add(client_id)
                self._owner[client_id] = peer
        return changed

    def _disown(self, client_id: int) -> None:
        previous = self._owner.pop(client_id, None)
        if previous is not None:
            owned = self._owned.get(previous)
            if owned is not None:
                owned.discard(client_id)
                if not owned:
                    del self._owned[previous]

    def remove_peer(self, peer: P) -> bytes | None:
        """Forget ``peer``; the frame that removes its states for everyone, or ``None``."""
        owned = self._owned.pop(peer, None)
        if not owned:
            return None
        removals = []
        for client_id in sorted(owned):
            del self._owner[client_id]
            clock, _ = self._states.pop(client_id)
            removals.append(AwarenessEntry(client_id, clock + 1, "null"))
        return encode_awareness(removals)

    def snapshot_frame(self) -> bytes | None:
        """One awareness frame with every present state, or ``None`` when there is none."""
        if not self._states:
            return None
        return encode_awareness(AwarenessEntry(cid, clock, state) for cid, (clock, state) in self._states.items())

    def clear(self) -> None:
        self._states.clear()
        self._owner.clear()
        self._owned.clear()
