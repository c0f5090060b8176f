"""The store contract, run unchanged against every backend (see ``algoroom.store.base``)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from algoroom.errors import RevisionConflict, SessionNotFound
from algoroom.sessions import Session, utcnow
from algoroom.store import SessionAlreadyExists, SessionStore, open_store

pytestmark = pytest.mark.asyncio

T0 = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)

ODD_IDS = [
    "",
    "missing",
    "x" * 1000,
    "../etc/passwd",
    "a:b:session:c",
    "*",
    "' OR 1=1 --",
    "日本語 🎉",
    "a\x00b",
    "\ud800",
    "%00",
]


def make_session(
    session_id: str | None = None, *, at: datetime = T0, code: str = "", language: str = "python"
) -> Session:
    session = Session.new(language)
    return Session(session.id if session_id is None else session_id, code, language, at, at, 0)


async def test_ping(store: SessionStore) -> None:
    await store.ping()


async def test_create_then_get_round_trips_every_field(store: SessionStore) -> None:
    session = Session("s1", "print('hi')\n", "python", T0, T0 + timedelta(seconds=1), 7)
    await store.create(session)
    got = await store.get("s1")
    assert got == session
    assert got.created_at.tzinfo is not None and got.created_at.utcoffset() == timedelta(0)


async def test_non_utc_times_are_stored_as_the_same_instant_in_utc(store: SessionStore) -> None:
    plus_two = timezone(timedelta(hours=2))
    await store.create(make_session("s", at=T0.astimezone(plus_two)))
    got = await store.get("s")
    assert got.created_at == T0 and got.created_at.utcoffset() == timedelta(0)
    updated = await store.update_code("s", "x", now=(T0 + timedelta(seconds=5)).astimezone(plus_two))
    assert updated.updated_at == T0 + timedelta(seconds=5)
    assert (await store.get("s")).updated_at == T0 + timedelta(seconds=5)


async def test_naive_datetimes_are_refused(store: SessionStore) -> None:
    naive = datetime(2030, 1, 1)
    with pytest.raises(ValueError, match="naive"):
        await store.create(make_session("s", at=naive))
    await store.create(make_session("s"))
    with pytest.raises(ValueError, match="naive"):
        await store.update_code("s", "x", now=naive)
    with pytest.raises(ValueError, match="naive"):
        await store.touch("s", naive)


async def test_create_of_an_existing_id_raises_and_keeps_the_first(store: SessionStore) -> None:
    await store.create(make_session("dup", code="first"))
    with pytest.raises(SessionAlreadyExists) as caught:
        await store.create(make_session("dup", code="second"))
    assert isinstance(caught.value, ValueError)
    assert (await store.get("dup")).code == "first"


@pytest.mark.parametrize("bad_id", ["a\x00b", "\udc00"])
async def test_create_refuses_ids_no_backend_can_hold(store: SessionStore, bad_id: str) -> None:
    with pytest.raises(ValueError):
        await store.create(make_session(bad_id))


async def test_any_unknown_id_is_simply_unknown(store: SessionStore) -> None:
    await store.create(make_session("known"))
    for session_id in ODD_IDS:
        assert await store.get(session_id) is None, session_id
        assert await store.load_document(session_id) is None
        assert await store.delete(session_id) is False
        await store.touch(session_id, T0)
        with pytest.raises(SessionNotFound):
            await store.update_code(session_id, "x")
        with pytest.raises(SessionNotFound):
            await store.save_document(session_id, b"state", "x")
    assert (await store.get("known")).revision == 0


async def test_odd_but_valid_ids_are_stored_verbatim(store: SessionStore) -> None:
    for session_id in ("", "x" * 1000, "../etc/passwd", "a:b:session:c", "*", "' OR 1=1 --", "日本語 🎉"):
        await store.create(make_session(session_id, code=session_id))
    for session_id in ("", "x" * 1000, "../etc/passwd", "a:b:session:c", "*", "' OR 1=1 --", "日本語 🎉"):
        assert (await store.get(session_id)).code == session_id
    assert await store.get("a:b") is None


async def test_update_code_bumps_revision_and_sets_updated_at(store: SessionStore) -> None:
    await store.create(make_session("s"))
    first = await store.update_code("s", "a = 1", now=T0 + timedelta(seconds=1))
    assert (first.code, first.language, first.revision, first.updated_at) == (
        "a = 1",
        "python",
        1,
        T0 + timedelta(seconds=1),
    )
    assert first.created_at == T0
    second = await store.update_code("s", "console.log(1)", "javascript", now=T0 + timedelta(seconds=2))
    assert (second.language, second.revision) == ("javascript", 2)
    assert await store.get("s") == second
    third = await store.update_code("s", "same", now=T0 + timedelta(seconds=3))
    assert third.language == "javascript" and third.revision == 3


async def test_update_code_defaults_now_to_the_current_time(store: SessionStore) -> None:
    await store.create(make_session("s"))
    before = utcnow()
    updated = await store.update_code("s", "x")
    assert before <= updated.updated_at <= utcnow()
    assert (await store.get("s")).updated_at == updated.updated_at


async def test_expected_revision_guards_against_lost_updates(store: SessionStore) -> None:
    await store.create(make_session("s"))
    await store.update_code("s", "one", expected_revision=0)
    with pytest.raises(RevisionConflict) as caught:
        await store.update_code("s", "stale", expected_revision=0)
    assert caught.value.details == {"expectedRevision": 0, "currentRevision": 1}
    got = await store.get("s")
    assert (got.code, got.revision) == ("one", 1)
    assert (await store.update_code("s", "two", expected_revision=1)).revision == 2


async def test_concurrent_updates_get_distinct_consecutive_revisions(store: SessionStore) -> None:
    await store.create(make_session("s"))
    results = await asyncio.gather(*(store.update_code("s", f"v{i}") for i in range(50)))
    assert sorted(r.revision for r in results) == list(range(1, 51))
    final = await store.get("s")
    assert final.revision == 50
    assert final.code == next(r.code for r in results if r.revision == 50)


async def test_concurrent_updates_from_one_base_revision_let_exactly_one_win(store: SessionStore) -> None:
    await store.create(make_session("s"))
    results = await asyncio.gather(
        *(store.update_code("s", f"v{i}", expected_revision=0) for i in range(20)), return_exceptions=True
    )
    winners = [r for r in results if isinstance(r, Session)]
    assert len(winners) == 1
    assert all(isinstance(r, RevisionConflict) for r in results if not isinstance(r, Session))
    assert await store.get("s") == winners[0]


async def test_failures_in_a_burst_do_not_affect_the_other_writes(store: SessionStore) -> None:
    await store.create(make_session("a"))
    results = await asyncio.gather(
        store.update_code("a", "ok1"),
        store.update_code("nope", "x"),
        store.create(make_session("a")),
        store.update_code("a", "bad", expected_revision=99),
        store.update_code("a", "ok2"),
        return_exceptions=True,
    )
    assert isinstance(results[1], SessionNotFound)
    assert isinstance(results[2], SessionAlreadyExists)
    assert isinstance(results[3], RevisionConflict)
    assert (await store.get("a")).revision == 2


@pytest.mark.parametrize(
    "code",
    [
        "",
        "plain ascii\n",
        "crlf\r\nlines\r\n",
        "tabs\tand\x00nul\x01controls",
        "日本語のコメント # 🎉👩‍👩‍👧 combining é",
        "x" * (2 * 1024 * 1024),
    ],
    ids=["empty", "ascii", "crlf", "controls", "unicode", "2MiB"],
)
async def test_code_round_trips_exactly(store: SessionStore, code: str) -> None:
    await store.create(make_session("s", code=code))
    assert (await store.get("s")).code == code
    await store.update_code("s", code + "!")
    assert (await store.get("s")).code == code + "!"


async def test_code_that_is_not_valid_unicode_is_refused(store: SessionStore) -> None:
    await store.create(make_session("s"))
    with pytest.raises(ValueError, match="Unicode"):
        await store.update_code("s", "bad \ud800 surrogate")
    with pytest.raises(ValueError, match="Unicode"):
        await store.save_document("s", b"", "bad \udfff")
    assert (await store.get("s")).revision == 0


async def test_delete_removes_session_and_document(store: SessionStore) -> None:
    await store.create(make_session("s"))
    await store.save_document("s", b"state", "code")
    assert await store.delete("s") is True
    assert await store.get("s") is None
    assert await store.load_document("s") is None
    assert await store.delete("s") is False
    await store.create(make_session("s"))  # the id can be used again, from scratch
    assert await store.load_document("s") is None
    assert (await store.get("s")).revision == 0


async def test_documents_are_stored_with_their_text(store: SessionStore) -> None:
    await store.create(make_session("s", code="old"))
    assert await store.load_document("s") is None
    state = bytes(range(256)) * 3
    saved = await store.save_document("s", state, "new text", now=T0 + timedelta(seconds=1))
    assert (saved.code, saved.revision, saved.updated_at) == ("new text", 1, T0 + timedelta(seconds=1))
    assert await store.load_document("s") == state
    assert await store.get("s") == saved


async def test_saving_a_document_without_text_change_keeps_the_revision(store: SessionStore) -> None:
    await store.create(make_session("s", code="same"))
    saved = await store.save_document("s", b"v1", "same", now=T0 + timedelta(seconds=1))
    assert (saved.revision, saved.updated_at) == (0, T0)
    saved = await store.save_document("s", b"v2", "same", now=T0 + timedelta(seconds=2))
    assert saved.revision == 0
    assert await store.load_document("s") == b"v2"
    saved = await store.save_document("s", b"v3", "changed", now=T0 + timedelta(seconds=3))
    assert saved.revision == 1 and saved.language == "python"


async def test_save_document_at_the_current_revision_succeeds(store: SessionStore) -> None:
    await store.create(make_session("s", code="a"))
    saved = await store.save_document("s", b"v1", "a", expected_revision=0, now=T0 + timedelta(seconds=1))
    assert (saved.code, saved.revision, saved.updated_at) == ("a", 0, T0)  # same text: no bump
    saved = await store.save_document("s", b"v2", "ab", expected_revision=0, now=T0 + timedelta(seconds=2))
    assert (saved.code, saved.revision, saved.updated_at) == ("ab", 1, T0 + timedelta(seconds=2))
    assert await store.get("s") == saved
    assert await store.load_document("s") == b"v2"
    saved = await store.save_document("s", b"v3", "abc", expected_revision=1, now=T0 + timedelta(seconds=3))
    assert saved.revision == 2 and await store.load_document("s") == b"v3"


async def test_save_document_at_a_stale_revision_changes_nothing(store: SessionStore) -> None:
    await store.create(make_session("s", code="a", at=T0))
    await store.save_document("s", b"theirs", "theirs", now=T0 + timedelta(seconds=1))  # revision 1
    before = await store.get("s")
    for code in ("mine", "theirs"):  # whether or not the text differs
        with pytest.raises(RevisionConflict) as caught:
            await store.save_document("s", b"mine", code, expected_revision=0, now=T0 + timedelta(days=9))
        assert caught.value.details == {"expectedRevision": 0, "currentRevision": 1}
    with pytest.raises(RevisionConflict):
        await store.save_document("s", b"mine", "mine", expected_revision=2)  # ahead is not current either
    assert await store.get("s") == before
    assert await store.load_document("s") == b"theirs"
    # Not even activity is recorded: the session is as idle as before the refused saves.
    assert await store.delete_idle(T0 + timedelta(seconds=2)) == ["s"]


async def test_save_document_with_a_stale_revision_on_a_session_without_document(store: SessionStore) -> None:
    await store.create(make_session("s"))
    await store.update_code("s", "put")
    with pytest.raises(RevisionConflict):
        await store.save_document("s", b"mine", "mine", expected_revision=0)
    assert await store.load_document("s") is None
    assert (await store.get("s")).code == "put"


async def test_save_document_of_an_unknown_session_with_expected_revision(store: SessionStore) -> None:
    with pytest.raises(SessionNotFound):
        await store.save_document("missing", b"state", "x", expected_revision=0)
    assert await store.load_document("missing") is None


async def test_concurrent_document_saves_from_one_base_revision_let_exactly_one_win(store: SessionStore) -> None:
    await store.create(make_session("s"))
    results = await asyncio.gather(
        *(store.save_document("s", f"state{i}".encode(), f"v{i}", expected_revision=0) for i in range(20)),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, Session)]
    assert len(winners) == 1
    assert all(isinstance(r, RevisionConflict) for r in results if not isinstance(r, Session))
    assert await store.get("s") == winners[0]
    assert await store.load_document("s") == f"state{winners[0].code[1:]}".encode()


async def test_save_document_without_expected_revision_ignores_the_revision(store: SessionStore) -> None:
    await store.create(make_session("s"))
    await store.update_code("s", "one")
    await store.update_code("s", "two")
    saved = await store.save_document("s", b"doc", "three", expected_revision=None)
    assert saved.revision == 3 and await store.load_document("s") == b"doc"


async def test_large_document(store: SessionStore) -> None:
    await store.create(make_session("s"))
    state = bytes(range(256)) * (5 * 1024 * 1024 // 256)
    await store.save_document("s", state, "x" * 1000)
    assert await store.load_document("s") == state


async def test_update_code_leaves_the_document_alone(store: SessionStore) -> None:
    await store.create(make_session("s"))
    await store.save_document("s", b"doc", "from doc")
    await store.update_code("s", "from put")
    assert await store.load_document("s") == b"doc"


async def test_delete_idle_removes_only_idle_sessions_not_kept(store: SessionStore) -> None:
    day = timedelta(days=1)
    await store.create(make_session("old", at=T0))
    await store.create(make_session("kept", at=T0))
    await store.create(make_session("touched", at=T0))
    await store.create(make_session("edited", at=T0))
    await store.create(make_session("documented", at=T0))
    await store.create(make_session("fresh", at=T0 + 3 * day))
    await store.save_document("old", b"state", "")
    await store.touch("touched", T0 + 3 * day)
    await store.touch("touched", T0)  # activity never moves backwards
    await store.update_code("edited", "x", now=T0 + 3 * day)
    await store.save_document("documented", b"state", "", now=T0 + 3 * day)  # unchanged text counts too

    deleted = await store.delete_idle(T0 + 2 * day, keep={"kept", "not-a-session", "a\x00b"})
    assert deleted == ["old"]
    assert await store.get("old") is None and await store.load_document("old") is None
    for survivor in ("kept", "touched", "edited", "documented", "fresh"):
        assert await store.get(survivor) is not None, survivor
    assert await store.delete_idle(T0 + 2 * day, keep=["kept"]) == []
    assert sorted(await store.delete_idle(T0 + 4 * day)) == ["documented", "edited", "fresh", "kept", "touched"]


async def test_delete_idle_boundary_is_exclusive(store: SessionStore) -> None:
    await store.create(make_session("s", at=T0))
    assert await store.delete_idle(T0) == []
    assert await store.delete_idle(T0 + timedelta(microseconds=1)) == ["s"]


async def test_many_idle_sessions(store: SessionStore) -> None:
    ids = [f"s{i}" for i in range(1200)]
    await asyncio.gather(*(store.create(make_session(i)) for i in ids))
    deleted = await store.delete_idle(T0 + timedelta(days=1), keep=ids[:5])
    assert sorted(deleted) == sorted(ids[5:])


async def test_data_survives_reopening(store_url: str) -> None:
    if store_url.startswith("memory:"):
        pytest.skip("memory:// is not persistent by design")
    async with open_store(store_url) as first:
        await first.create(make_session("s"))
        await first.update_code("s", "kept")
        await first.save_document("s", b"state", "kept")
    async with open_store(store_url) as second:
        assert (await second.get("s")).code == "kept"
        assert await second.load_document("s") == b"state"


async def test_two_stores_opening_at_once_both_work(store_url: str) -> None:
    first, second = open_store(store_url), open_store(store_url)
    await asyncio.gather(first.open(), second.open())
    try:
        await first.create(make_session("s"))
        if not store_url.startswith("memory:"):
            assert (await second.update_code("s", "x")).revision == 1
    finally:
        await asyncio.gather(first.close(), second.close())


async def test_close_is_idempotent_and_reopen_works(store_url: str) -> None:
    store = open_store(store_url)
    await store.open()
    await store.close()
    await store.close()
    await store.open()
    await store.ping()
    await store.close()


async def test_close_lets_submitted_writes_finish(store_url: str) -> None:
    """A graceful shutdown loses nothing that was acknowledged, nor anything already sent."""
    store = open_store(store_url)
    await store.open()
    await store.create(make_session("s"))
    tasks = [asyncio.create_task(store.update_code("s", f"v{i}")) for i in range(50)]
    await asyncio.sleep(0)  # every task has made its call
    await store.close()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, Session) for r in results), [r for r in results if not isinstance(r, Session)][:1]
    if not store_url.startswith("memory:"):
        async with open_store(store_url) as reopened:
            assert (await reopened.get("s")).revision == 50
