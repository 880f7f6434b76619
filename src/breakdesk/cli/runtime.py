"""Running async store work from synchronous Typer commands, with errors turned into clean exits."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from breakdesk.cli.common import fail, print_problems
from breakdesk.packs.problems import PackError
from breakdesk.store import Store
from breakdesk.store.engine import database_target, sqlite_path
from breakdesk.store.errors import Conflict, NotFound, StoreError

T = TypeVar("T")


@asynccontextmanager
async def opened(url: str | None = None) -> Any:
    store = await Store.open(url)
    try:
        yield store
    finally:
        # A search process the command's pipeline started ends with its store; a command that never loaded the
        # memory has none (and should not pay for importing it here).
        service = sys.modules.get("breakdesk.memory.service")
        if service is not None:
            service.Memory.close_shared(store)
        await store.close()


async def known_tenant(store: Store, tenant_id: str) -> None:
    """A command naming a tenant that does not exist is a usage error, not an empty answer (exit 2)."""
    if await store.get_tenant(tenant_id) is None:
        raise NotFound(f"tenant {tenant_id!r} does not exist")


def run_or_fail(fn: Callable[[], T]) -> T:
    """Run `fn`; pack problems are printed (file, JSON path, reason) and exit with code 2."""
    try:
        return fn()
    except PackError as exc:
        print_problems(exc.problems)
        fail(f"{len(exc.problems)} problem(s)")


def _sqlite_file_missing(url: str | None) -> str | None:
    """The path of the SQLite file `url` names when there is none there (None: it exists, or not SQLite)."""
    try:
        path = sqlite_path(database_target(url))
    except StoreError:
        return None  # (Store.open says what is wrong with the URL)
    if path is None:
        return None
    folder = os.path.dirname(os.path.abspath(path))
    return path if os.path.isdir(folder) and not os.path.exists(path) else None  # (a missing folder: likewise)


def check_store(url: str | None = None) -> None:
    """Open the store (migrating it) and close it: a database that cannot be opened is a one-line error
    (`db upgrade`, and `serve` before its app opens its own store)."""

    async def opens(store: Store) -> None:
        return None

    run_with_store(opens, url)


def run_with_store(fn: Callable[[Store], Awaitable[T]], url: str | None = None, *, reads: bool = False) -> T:
    """Open the store (migrating it), run `fn`, close; store and pack errors exit with code 2. `reads`: the
    command only reads, so a SQLite file that does not exist is a mistyped path, not a database to create."""
    if reads and (missing := _sqlite_file_missing(url)) is not None:
        fail(f"no database at {missing} (a command that only reads creates none: check the path or "
             f"BREAKDESK_DATABASE_URL)")

    async def main() -> T:
        async with opened(url) as store:
            return await fn(store)

    try:
        return run_or_fail(lambda: asyncio.run(main()))
    except (NotFound, Conflict) as exc:
        fail(str(exc))
    except StoreError as exc:
        fail(f"store: {exc}")
