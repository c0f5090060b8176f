"""Yjs collaboration core: the y-websocket protocol, awareness relay, text diffs, rooms.

Framework-neutral (no aiohttp here): the WebSocket handler feeds binary frames to a
:class:`YRoom` and hands it peers whose ``send(bytes)`` queues without blocking.
"""

from .protocol import ProtocolError
from .room import ORIGIN_LOAD, ORIGIN_SEED, ORIGIN_SERVER, TEXT_NAME, Peer, YRoom

__all__ = ["ORIGIN_LOAD", "ORIGIN_SEED", "ORIGIN_SERVER", "TEXT_NAME", "Peer", "ProtocolError", "YRoom"]
