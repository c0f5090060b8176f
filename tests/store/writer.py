"""A separate process that writes to a store and reports each acknowledged write.

Run by the durability and cross-process tests (never collected by pytest):

    python tests/store/writer.py URL SESSION_ID MODE COUNT

MODE ``code`` calls ``update_code(SESSION_ID, "v<revision-to-be>")``; ``document`` calls
``save_document`` with state ``b"state:<code>"``. After each call returns, one line
``<revision> <code>`` is printed and flushed: that write was acknowledged. COUNT 0 means
forever (until killed). The first line is ``ready``.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from algoroom.store import open_store  # noqa: E402


async def main(url: str, session_id: str, mode: str, count: int) -> None:
    async with open_store(url) as store:
        print("ready", flush=True)
        i = 0
        while count == 0 or i < count:
            i += 1
            code = f"{mode}-{sys.argv[5] if len(sys.argv) > 5 else ''}-{i}"
            if mode == "code":
                session = await store.update_code(session_id, code)
            else:
                session = await store.save_document(session_id, f"state:{code}".encode(), code)
            print(session.revision, session.code, flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
