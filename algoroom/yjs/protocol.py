"""The y-websocket wire protocol (y-protocols ``PROTOCOL.md``): encode and decode frames.

One WebSocket binary frame holds one message: ``varUint(type)`` then a body.

======  ==================  =====================================================
 type    name                body
======  ==================  =====================================================
 0       sync                ``varUint(step)`` + ``varUint8Array(payload)``; step 0 =
                             SyncStep1 (state vector), 1 = SyncStep2 (update),
                             2 = Update
 1       awareness           ``varUint8Array(n x (varUint clientID, varUint clock,
                             varString JSON state, "null" when removed))``
 2       auth                ``varUint(0)`` + ``varString(reason)``: permission denied
 3       queryAwareness      empty: "send me every awareness state"
======  ==================  =====================================================

Written from the spec rather than on top of pycrdt's helpers because pycrdt's
``Encoder.write_var_string`` prefixes the *character* count where lib0 expects the UTF-8
*byte* count (non-ASCII awareness names would corrupt the frame), and because decoding must
be total: any byte string either decodes or raises :class:`ProtocolError`, never anything
else, so a peer's garbage costs that peer its connection and nothing more.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple, Union

MESSAGE_SYNC = 0
MESSAGE_AWARENESS = 1
MESSAGE_AUTH = 2
MESSAGE_QUERY_AWARENESS = 3

SYNC_STEP1 = 0
SYNC_STEP2 = 1
SYNC_UPDATE = 2

AUTH_PERMISSION_DENIED = 0

#: The encoding of an update that changes nothing (no structs, empty delete set).
EMPTY_UPDATE = b"\x00\x00"

#: An awareness message with no entries: a no-op for every client, but an *application*
#: message, which is what keeps y-websocket v3 from reconnecting after 30 s of silence.
KEEPALIVE_FRAME = b"\x01\x01\x00"

#: lib0 integers are JavaScript numbers; we accept up to 64 bits (Yrs peers use u64
#: client IDs) and refuse longer encodings instead of building huge Python ints.
_MAX_VAR_UINT_BYTES = 10


class ProtocolError(ValueError):
    """A frame that is not a well-formed y-websocket message (or carries an unusable update)."""


# --------------------------------------------------------------------------- encoding


def write_var_uint(out: bytearray, value: int) -> None:
    """Append ``value`` as a lib0 varUint (7 bits per byte, little-endian, high bit = more)."""
    if value < 0:
        raise ValueError(f"varUint cannot encode a negative number ({value})")
    while value > 0x7F:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)


def encode_var_uint(value: int) -> bytes:
    out = bytearray()
    write_var_uint(out, value)
    return bytes(out)


def write_var_bytes(out: bytearray, data: bytes) -> None:
    """Append a lib0 varUint8Array: byte length, then the bytes."""
    write_var_uint(out, len(data))
    out += data


def write_var_string(out: bytearray, text: str) -> None:
    """Append a lib0 varString: the UTF-8 **byte** length, then the UTF-8 bytes."""
    write_var_bytes(out, text.encode("utf-8"))


def _sync_frame(step: int, payload: bytes) -> bytes:
    out = bytearray((MESSAGE_SYNC, step))
    write_var_bytes(out, payload)
    return bytes(out)


def encode_sync_step1(state_vector: bytes) -> bytes:
    return _sync_frame(SYNC_STEP1, state_vector)


def encode_sync_step2(update: bytes) -> bytes:
    return _sync_frame(SYNC_STEP2, update)


def encode_update(update: bytes) -> bytes:
    return _sync_frame(SYNC_UPDATE, update)


class AwarenessEntry(NamedTuple):
    """One client's awareness record; ``state`` is the JSON text, ``"null"`` once removed."""

    client_id: int
    clock: int
    state: str

    @property
    def removed(self) -> bool:
        return self.state == "null"


def encode_awareness_payload(entries: Iterable[AwarenessEntry]) -> bytes:
    """The awareness update itself (what y-protocols' ``encodeAwarenessUpdate`` returns)."""
    entries = tuple(entries)
    out = bytearray()
    write_var_uint(out, len(entries))
    for client_id, clock, state in entries:
        write_var_uint(out, client_id)
        write_var_uint(out, clock)
        write_var_string(out, state)
    return bytes(out)


def encode_awareness(entries: Iterable[AwarenessEntry]) -> bytes:
    out = bytearray((MESSAGE_AWARENESS,))
    write_var_bytes(out, encode_awareness_payload(entries))
    return bytes(out)


def encode_query_awareness() -> bytes:
    return bytes((MESSAGE_QUERY_AWARENESS,))


def encode_auth_denied(reason: str) -> bytes:
    """The frame that makes a y-websocket client report "permission denied"."""
    out = bytearray((MESSAGE_AUTH, AUTH_PERMISSION_DENIED))
    write_var_string(out, reason)
    return bytes(out)


# --------------------------------------------------------------------------- decoding


class Decoder:
    """Reads lib0-encoded values from a buffer; every failure is a :class:`ProtocolError`."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    @property
    def done(self) -> bool:
        return self._pos >= len(self._data)

    def read_var_uint(self) -> int:
        data, pos = self._data, self._pos
        value = shift = 0
        for _ in range(_MAX_VAR_UINT_BYTES):
            if pos >= len(data):
                raise ProtocolError("truncated varUint")
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                self._pos = pos
                return value
            shift += 7
        raise ProtocolError("varUint longer than 64 bits")

    def read_var_bytes(self) -> bytes:
        length = self.read_var_uint()
        start = self._pos
        end = start + length
        if end > len(self._data):
            raise ProtocolError(f"varUint8Array of {length} bytes overruns the frame")
        self._pos = end
        return bytes(self._data[start:end])

    def read_var_string(self) -> str:
        raw = self.read_var_bytes()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("varString is not valid UTF-8") from None

    def expect_end(self, what: str) -> None:
        if not self.done:
            raise ProtocolError(f"{len(self._data) - self._pos} unexpected trailing byte(s) after {what}")


@dataclass(frozen=True)
class SyncMessage:
    step: int  #: SYNC_STEP1, SYNC_STEP2 or SYNC_UPDATE
    payload: bytes  #: a state vector (step 1) or an update (step 2, update)


@dataclass(frozen=True)
class AwarenessMessage:
    payload: bytes  #: the raw awareness update, for relaying unchanged
    entries: tuple[AwarenessEntry, ...]


@dataclass(frozen=True)
class AuthMessage:
    reason: str


@dataclass(frozen=True)
class QueryAwarenessMessage:
    pass


Message = Union[SyncMessage, AwarenessMessage, AuthMessage, QueryAwarenessMessage]


def decode_awareness_payload(payload: bytes) -> tuple[AwarenessEntry, ...]:
    decoder = Decoder(payload)
    count = decoder.read_var_uint()
    # Each entry takes at least 3 bytes: refuse absurd counts before looping over them.
    if count * 3 > len(payload):
        raise ProtocolError(f"awareness update claims {count} entries in {len(payload)} bytes")
    entries = tuple(
        AwarenessEntry(decoder.read_var_uint(), decoder.read_var_uint(), decoder.read_var_string())
        for _ in range(count)
    )
    decoder.expect_end("the awareness update")
    return entries


def decode_message(frame: bytes) -> Message:
    """Decode one frame; anything malformed raises :class:`ProtocolError`.

    Payloads are checked for framing only: whether an update or a state vector is valid
    Yjs is for the document to decide (the room turns its refusal into a ProtocolError).
    """
    if not isinstance(frame, (bytes, bytearray, memoryview)):
        raise ProtocolError(f"a frame is bytes, not {type(frame).__name__}")
    decoder = Decoder(frame)
    kind = decoder.read_var_uint()
    message: Message
    if kind == MESSAGE_SYNC:
        step = decoder.read_var_uint()
        if step not in (SYNC_STEP1, SYNC_STEP2, SYNC_UPDATE):
            raise ProtocolError(f"unknown sync step {step}")
        message = SyncMessage(step, decoder.read_var_bytes())
    elif kind == MESSAGE_AWARENESS:
        payload = decoder.read_var_bytes()
        message = AwarenessMessage(payload, decode_awareness_payload(payload))
    elif kind == MESSAGE_AUTH:
        decoder.read_var_uint()  # only "permission denied" (0) is defined
        message = AuthMessage(decoder.read_var_string())
    elif kind == MESSAGE_QUERY_AWARENESS:
        message = QueryAwarenessMessage()
    else:
        raise ProtocolError(f"unknown message type {kind}")
    decoder.expect_end("the message")
    return message


# --------------------------------------------------------------------------- Yjs update v1 headers


def read_state_vector(state_vector: bytes) -> dict[int, int]:
    """Decode an encoded state vector (``Doc.get_state()``) into ``{client: clock}``."""
    decoder = Decoder(state_vector)
    count = decoder.read_var_uint()
    if count * 2 > len(state_vector):
        raise ProtocolError(f"state vector claims {count} entries in {len(state_vector)} bytes")
    vector = {decoder.read_var_uint(): decoder.read_var_uint() for _ in range(count)}
    decoder.expect_end("the state vector")
    return vector


#: ``{client: (first clock, clock after the last struct)}``
ClockRanges = dict[int, tuple[int, int]]


def update_clock_ranges(update: bytes) -> ClockRanges:
    """``{client: (first clock, clock after the last struct)}`` for every client in an update (v1).

    Reads struct headers and lengths without building the content. The room needs both
    ends: Yrs integrates an item whose clock leaves a gap after the client's known clock
    without reporting it (so it is never relayed), where Yjs keeps it pending; the room
    holds such updates back itself, and tracks each client's clock from the updates it
    integrated. :class:`ProtocolError` if the structs are malformed.
    """
    decoder = Decoder(update)
    ranges: dict[int, tuple[int, int]] = {}
    groups = decoder.read_var_uint()
    if groups > len(update):
        raise ProtocolError(f"update claims {groups} clients in {len(update)} bytes")
    for _ in range(groups):
        structs = decoder.read_var_uint()
        client = decoder.read_var_uint()
        start = clock = decoder.read_var_uint()
        if structs > len(update):
            raise ProtocolError(f"update claims {structs} structs in {len(update)} bytes")
        for _ in range(structs):
            clock += _skip_struct(decoder)
        ranges[client] = (start, clock)
    return ranges


def _skip_struct(decoder: Decoder) -> int:
    """Skip one struct; returns its length in clock ticks."""
    if decoder.done:
        raise ProtocolError("truncated update")
    info = decoder._data[decoder._pos]
    decoder._pos += 1
    ref = info & 0x1F
    if ref in (0, 10):  # GC, Skip: length only
        return decoder.read_var_uint()
    has_origin, has_right = info & 0x80, info & 0x40
    if has_origin:
        decoder.read_var_uint(), decoder.read_var_uint()
    if has_right:
        decoder.read_var_uint(), decoder.read_var_uint()
    if not has_origin and not has_right:
        if decoder.read_var_uint():  # parent is a root type, by name
            decoder.read_var_string()
        else:  # parent is an item, by ID
            decoder.read_var_uint(), decoder.read_var_uint()
        if info & 0x20:
            decoder.read_var_string()  # parentSub
    if ref == 1:  # deleted
        return decoder.read_var_uint()
    if ref == 2:  # JSON
        count = decoder.read_var_uint()
        for _ in range(count):
            decoder.read_var_string()
        return count
    if ref == 3:  # binary
        decoder.read_var_bytes()
    elif ref == 4:  # string: its length in UTF-16 code units, as Yjs counts
        text = decoder.read_var_string()
        return len(text) if text.isascii() else len(text.encode("utf-16-le")) // 2
    elif ref == 5:  # embed
        decoder.read_var_string()
    elif ref == 6:  # format
        decoder.read_var_string(), decoder.read_var_string()
    elif ref == 7:  # type
        if decoder.read_var_uint() in (3, 5):  # XmlElement, XmlHook carry a name
            decoder.read_var_string()
    elif ref == 8:  # any
        count = decoder.read_var_uint()
        for _ in range(count):
            _skip_any(decoder, 0)
        return count
    elif ref == 9:  # subdocument
        decoder.read_var_string()
        _skip_any(decoder, 0)
    else:
        raise ProtocolError(f"unknown struct content type {ref}")
    return 1


def _skip_any(decoder: Decoder, depth: int) -> None:
    """Skip one lib0 ``Any`` value."""
    if depth > 100:
        raise ProtocolError("lib0 Any nested too deeply")
    if decoder.done:
        raise ProtocolError("truncated lib0 Any")
    tag = decoder._data[decoder._pos]
    decoder._pos += 1
    if tag in (127, 126, 121, 120):  # undefined, null, false, true
        return
    if tag == 125:  # varInt: same byte layout as varUint
        decoder.read_var_uint()
    elif tag in (124, 123, 122):  # float32, float64, bigint64
        width = 4 if tag == 124 else 8
        if decoder._pos + width > len(decoder._data):
            raise ProtocolError("truncated number")
        decoder._pos += width
    elif tag == 119:
        decoder.read_var_string()
    elif tag == 118:  # object
        for _ in range(decoder.read_var_uint()):
            decoder.read_var_string()
            _skip_any(decoder, depth + 1)
    elif tag == 117:  # array
        for _ in range(decoder.read_var_uint()):
            _skip_any(decoder, depth + 1)
    elif tag == 116:
        decoder.read_var_bytes()
    else:
        raise ProtocolError(f"unknown lib0 Any tag {tag}")
