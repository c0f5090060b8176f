"""Settings: parsed from the environment, validated, and every one documented."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from algoroom.__main__ import freeze_startup_objects, parse_args
from algoroom.settings import Settings, documented_settings, markdown_table

README = Path(__file__).resolve().parent.parent / "README.md"


def test_every_setting_is_documented_in_the_readme():
    text = README.read_text()
    missing = [name for name, _default, _help in documented_settings() if f"`{name}`" not in text]
    assert missing == []
    # The table is generated: `python -m algoroom.settings` prints what belongs in the README.
    assert markdown_table() in text


def test_defaults():
    settings = Settings.from_env({})
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.max_body_bytes == 1024 * 1024
    assert "http://localhost:5173" in settings.cors_origins
    assert settings.database_url.startswith("sqlite:///") and settings.database_url.endswith("algoroom.db")


def test_environment_and_overrides():
    env = {"HOST": "0.0.0.0", "PORT": "9001", "ALGOROOM_MAX_BODY_BYTES": "2048", "ALGOROOM_WS_HEARTBEAT_SECONDS": "5"}
    settings = Settings.from_env(env, port=9100)
    assert settings.host == "0.0.0.0"
    assert settings.port == 9100
    assert settings.max_body_bytes == 2048
    assert settings.ws_heartbeat_seconds == 5.0


@pytest.mark.parametrize(
    "env", [{"PORT": "eighty"}, {"PORT": "70000"}, {"ALGOROOM_MAX_BODY_BYTES": "-1"}, {"ALGOROOM_WS_SEND_QUEUE": "x"}]
)
def test_invalid_values_fail_fast(env):
    with pytest.raises(ValueError):
        Settings.from_env(env)


def test_cli_flags_parse():
    args = parse_args(["--host", "0.0.0.0", "--port", "1234"])
    assert (args.host, args.port) == ("0.0.0.0", 1234)


async def test_started_server_exempts_its_startup_objects_from_gc():
    before = gc.get_freeze_count()  # not always 0: on some Pythons the runtime froze a few
    try:
        await freeze_startup_objects(None)
        assert gc.get_freeze_count() > before + 1000  # at least every module loaded so far
    finally:
        gc.unfreeze()
