"""``open_store`` picks the backend from the URL and explains what it cannot use."""

from __future__ import annotations

import pytest

from algoroom.store import open_store
from algoroom.store.base import redact_url
from algoroom.store.memory import MemoryStore
from algoroom.store.sqlite import SQLiteStore, parse_sqlite_url


@pytest.mark.parametrize("url", ["mysql://x", "sqlite3:///a.db", "", "just-a-path.db", "http://x"])
def test_unknown_schemes_are_refused_with_the_supported_list(url: str) -> None:
    with pytest.raises(ValueError, match="memory://, sqlite:///PATH, postgresql://, redis://"):
        open_store(url)


def test_schemes_select_backends() -> None:
    assert isinstance(open_store("memory://"), MemoryStore)
    assert isinstance(open_store("sqlite:///a.db"), SQLiteStore)
    assert type(open_store("postgresql://u:p@h/db")).__name__ == "PostgresStore"
    assert type(open_store("postgres://h/db")).__name__ == "PostgresStore"
    assert type(open_store("redis://h:6379/0")).__name__ == "RedisStore"
    assert type(open_store("rediss://h:6379/0")).__name__ == "RedisStore"


def test_sqlite_paths_follow_the_three_slash_rule() -> None:
    assert parse_sqlite_url("sqlite:///data/a.db") == ("data/a.db", "FULL", 5000)
    assert parse_sqlite_url("sqlite:////var/lib/a.db?synchronous=normal&busy_timeout=100") == (
        "/var/lib/a.db",
        "NORMAL",
        100,
    )
    assert parse_sqlite_url("sqlite:///my%20dir/a.db")[0] == "my dir/a.db"


@pytest.mark.parametrize(
    "url",
    ["sqlite://host/a.db", "sqlite:///", "sqlite:///:memory:", "sqlite:///a.db?synchronous=off", "sqlite:///a.db?x=1"],
)
def test_bad_sqlite_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        open_store(url)


def test_passwords_are_redacted_for_logs() -> None:
    assert redact_url("postgresql://app:s3cret@db:5432/algo") == "postgresql://app:***@db:5432/algo"
    assert redact_url("redis://:s3cret@cache:6379/0") == "redis://:***@cache:6379/0"
    assert redact_url("redis://cache:6379/0") == "redis://cache:6379/0"
    assert "s3cret" not in open_store("postgresql://app:s3cret@db/algo").url
    assert "s3cret" not in repr(open_store("redis://:s3cret@cache/0"))
    assert "s3cret" not in str(pytest.raises(ValueError, open_store, "mysql://u:s3cret@h/db").value)
