"""Where sessions live between requests and across restarts.

One interface, :class:`SessionStore`, with a backend per URL scheme (``memory://``,
``sqlite:///PATH``, ``postgresql://...``, ``redis://...``); :func:`open_store` picks one.
The HTTP layer and the Yjs rooms only ever see the interface.
"""

from algoroom.store.base import SessionAlreadyExists, SessionStore, open_store

__all__ = ["SessionAlreadyExists", "SessionStore", "open_store"]
