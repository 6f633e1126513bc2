"""The metadata store: SQLAlchemy on SQLite (PostgreSQL by URL), migrated with Alembic.

All access goes through one worker thread (`Database.run`), which keeps the
event loop unblocked and gives SQLite its single writer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

T = TypeVar("T")
MIGRATIONS = str(Path(__file__).parent / "migrations")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL with NORMAL sync: a committed row survives a crash of emberd (the
    # WAL is written before commit returns); a power loss may lose the last
    # commits but never corrupts the file. FULL would fsync every commit,
    # ~3 ms each here, several per command.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = create_engine(url)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="store")

    @classmethod
    def sqlite(cls, path: str | Path) -> Database:
        return cls(f"sqlite:///{path}")

    def migrate(self) -> None:
        config = Config()
        config.set_main_option("script_location", MIGRATIONS)
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def run_sync(self, fn: Callable[[Session], T]) -> T:
        """Run `fn` in one transaction, committed when it returns."""
        with self._sessions.begin() as session:
            return fn(session)

    async def run(self, fn: Callable[[Session], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.run_sync, fn)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.engine.dispose()
