"""The pipeline's similar-case searches in a process of their own, beside the one that decides.

Why: searching a batch's exceptions and keeping the tenant's resident index in step with what was written cost
the pipeline's event loop about 60 µs per exception, most of the memory's cost on the hot path
(bench/RESULTS.md). Triage's similar cases are evidence: no decision depends on them. So a child process holds
the tenants' resident indexes, read from the same database, and answers a batch's queries in slices while the
pipeline decides; the pipeline waits only if it reaches an exception whose answer has not arrived yet. After
each batch commits, the child is told to read the new cases then, while the pipeline reads its next batch.

The answers are the same as the in-process search's: the child builds each query from the text and key fields
the pipeline rendered (`index.text_query`) and searches the index `Memory.index` keeps, with the same `k` and
triage window (tested by comparing both ways on the same exceptions).

Messages are pickles framed by a 4-byte length, over a socket pair: the parent's end is an asyncio transport,
so sending a batch never blocks its event loop. Parent to child: `("open", url, max_resident_cases)` first,
then `("sync", id, tenant)` and `("search", id, tenant, k, window, items, keys)`. Child to parent:
`("hits", id, pairs, first, done)` per slice (`first`, with the first slice only: the last resolutions
and the id of the latest case the child's index holds) and
`("synced", id)`; `("loading", id)` per page of cases read while it loads an index (so that a large tenant is
not taken for a stuck child); `("failed", id, reason)` when a request could not be answered. When the child cannot start,
dies, fails to answer or sends nothing for `ANSWER_TIMEOUT_S`, it is killed, what it did not answer is searched
in the pipeline's process, and the next `RETRY_S` seconds' batches are searched there before a new child
starts. That search reads the cases the child had read and no later ones (the batch's own, which PostgreSQL
commits in chunks meanwhile, are not its similar cases); unlike the child, it misses a case the indexer replaced
(a resolution recorded) during the batch, and it cannot unread what this process's own index read already. The child exits when
the parent's end closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import time
import weakref
from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import URL

from breakdesk.pipeline.types import SimilarCase
from breakdesk.store.engine import sqlite_path

log = logging.getLogger(__name__)

_LEN = struct.Struct("!I")
#: `SimilarCase(*h)` without the generated `__new__`'s Python frame (k per exception).
_new_tuple = tuple.__new__
#: Queries per answer message: the first is small, so the pipeline's first exceptions wait little; later
#: ones larger, since every message costs a pickle and a loop wake-up.
FIRST_SLICE = 16
SLICE = 128
#: A child that sends nothing for this many seconds while a request waits is stuck: it is killed, and the
#: batch is searched in process. While it loads a tenant's index (≈ 10 s per 100,000 cases) it reports each
#: page it reads, so a large tenant does not look stuck.
ANSWER_TIMEOUT_S = 120.0
#: After the search process failed (it could not start, ended, or stopped answering), batches are searched in
#: the pipeline's own process for this many seconds before a new one is started.
RETRY_S = 30.0
#: An item the child searches: (exception id, type, source system, fingerprint, rendered text, key fields).
Item = tuple[str, str, str, str | None, str, dict[str, str]]


def child_url(url: URL) -> URL | None:
    """The URL a search process opens for the store at `url`, or None when another process cannot open the
    same database (in-memory SQLite). A relative SQLite path is made absolute."""
    if url.get_backend_name() == "postgresql":
        return url
    path = sqlite_path(url)
    if path is None:
        return None
    return url.set(database=os.path.abspath(path))


def _frame(message: Any) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LEN.pack(len(data)) + data


class RemoteSearch:
    """One request to the search process: its answers as they arrive."""

    __slots__ = ("_deadline", "_event", "_owner", "done", "error", "last_resolution", "similar", "skip", "upto")

    def __init__(self, owner: SearchProcess) -> None:
        self._owner = weakref.ref(owner)
        self.similar: dict[str, tuple[SimilarCase, ...]] = {}
        self.last_resolution: dict[str, str] = {}
        self.done = False
        self.error: str | None = None
        #: The id of the latest case the child's index held when it answered (None until it first answers):
        #: a search in process after a failure looks no further.
        self.upto: int | None = None
        #: Exceptions answered in process instead (`Memory.for_batch`): the child's answers for them are not
        #: the ones the pipeline reads.
        self.skip: set[str] = set()
        self._event = asyncio.Event()
        self._deadline = time.monotonic() + ANSWER_TIMEOUT_S

    def _answer(self, pairs: Sequence[tuple[str, tuple[tuple[str, float, str, str | None], ...]]],
                first: tuple[dict[str, str], int] | None, done: bool) -> None:
        similar, skip = self.similar, self.skip
        for eid, hits in pairs:
            if eid not in skip:
                similar[eid] = tuple([_new_tuple(SimilarCase, h) for h in hits])
        if first is not None:
            last, self.upto = first
            for fp, text in last.items():
                self.last_resolution.setdefault(fp, text)
        if done:
            self.done = True
        self._event.set()

    def _fail(self, reason: str) -> None:
        if not self.done:
            self.error = reason
            self.done = True
        self._event.set()

    async def wait(self, exception_id: str | None = None) -> None:
        """Until the answer for `exception_id` (None: every answer) is in, or the request failed."""
        while not self.done and (exception_id is None or exception_id not in self.similar):
            self._event.clear()
            left = self._deadline - time.monotonic()
            try:
                await asyncio.wait_for(self._event.wait(), max(left, 0.0))
            except TimeoutError:
                if time.monotonic() < self._deadline:  # (the child answered another request meanwhile)
                    continue
                owner = self._owner()
                reason = f"no answer from the search process within {ANSWER_TIMEOUT_S:.0f} s"
                if owner is not None:
                    owner._failed(reason)  # (stops it: a stuck process would time out every batch)
                self._fail(reason)


class _Channel(asyncio.Protocol):
    """The parent's end: frames in, messages to the owner."""

    def __init__(self, owner: SearchProcess) -> None:
        self._owner = weakref.ref(owner)
        self._buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        start = 0
        while len(buf) - start >= 4:
            (n,) = _LEN.unpack_from(buf, start)
            if len(buf) - start - 4 < n:
                break
            message = pickle.loads(memoryview(buf)[start + 4:start + 4 + n])
            start += 4 + n
            owner = self._owner()
            if owner is not None:
                owner._received(message)
        if start:
            del buf[:start]

    def connection_lost(self, exc: Exception | None) -> None:
        owner = self._owner()
        if owner is not None:
            owner._lost(self, "the search process ended" + (f": {exc}" if exc else ""))


class SearchProcess:
    """The parent's handle on one search process for one database: started on first use, restarted on the next
    request after it died. One search is answered at a time (requests wait their turn)."""

    def __init__(self, url: URL, max_resident_cases: int) -> None:
        self._url = url
        self._max = max_resident_cases
        self._proc: subprocess.Popen[bytes] | None = None
        self._channel: _Channel | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._requests: dict[int, RemoteSearch] = {}
        self._next_id = 0
        self._current: RemoteSearch | None = None
        self._finalizer: weakref.finalize[Any, SearchProcess] | None = None
        self._retry_at = 0.0
        self._starting: asyncio.Lock | None = None
        self._starting_loop: asyncio.AbstractEventLoop | None = None
        #: Tenants the running child has searched: the ones worth telling about new cases.
        self._tenants: set[str] = set()

    def available(self) -> bool:
        """False for `RETRY_S` after a failure."""
        return time.monotonic() >= self._retry_at

    def _failed(self, reason: str) -> None:
        log.warning("memory: the search process failed (%s); searching in process for %.0f s", reason, RETRY_S)
        self._retry_at = time.monotonic() + RETRY_S
        self._fail_all(reason)
        self.close()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    async def _ensure(self) -> _Channel:
        """The running child's channel; a new child when none runs. OSError when none can run now."""
        loop = asyncio.get_running_loop()
        if self._starting is None or self._starting_loop is not loop:
            self._starting, self._starting_loop = asyncio.Lock(), loop
        async with self._starting:  # (two batches at once start one child)
            ch = self._live(loop)
            if ch is not None:
                return ch
            self.close()
            if not self.available():
                raise OSError("the search process failed recently")
            return await self._start(loop)

    async def _start(self, loop: asyncio.AbstractEventLoop) -> _Channel:
        parent, child = socket.socketpair()
        proc: subprocess.Popen[bytes] | None = None
        try:
            proc = subprocess.Popen(
                # (-P: not the working directory's modules)
                [sys.executable, "-P", "-c",
                 "import sys; from breakdesk.memory.sidecar import main; main(int(sys.argv[1]))",
                 str(child.fileno())],
                pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, close_fds=True,
            )
            child.close()
            _, ch = await loop.create_unix_connection(lambda: _Channel(self), sock=parent)
        except BaseException as exc:
            child.close()
            parent.close()
            if proc is not None:
                proc.kill()
                proc.wait()
            if not isinstance(exc, Exception):
                raise
            self._failed(f"cannot start it: {exc}")
            raise OSError(f"cannot start the search process: {exc}") from exc
        assert ch.transport is not None
        ch.transport.write(_frame(("open", self._url.render_as_string(hide_password=False), self._max)))
        self._proc, self._channel, self._loop = proc, ch, loop
        self._tenants = set()
        self._finalizer = weakref.finalize(self, _stop, proc, ch.transport, parent)
        log.info("memory: search process %d started", proc.pid)
        return ch

    def _live(self, loop: asyncio.AbstractEventLoop) -> _Channel | None:
        """The running child's channel on `loop`, if there is one."""
        ch = self._channel
        if ch is not None and self._loop is loop and ch.transport is not None and not ch.transport.is_closing():
            return ch
        return None

    def _request(self, message: tuple[Any, ...]) -> RemoteSearch:
        rid = self._next_id = self._next_id + 1
        out = self._requests[rid] = RemoteSearch(self)
        assert self._channel is not None and self._channel.transport is not None
        self._channel.transport.write(_frame((message[0], rid, *message[1:])))
        return out

    def notify(self, tenant_id: str) -> None:
        """Have a running child read the tenant's new cases now, before the next search needs them."""
        if tenant_id in self._tenants and self._live(asyncio.get_running_loop()) is not None:
            self._request(("sync", tenant_id))

    async def sync(self, tenant_id: str) -> RemoteSearch:
        """Have the child read the tenant's new cases now; the result is done when it has."""
        await self._ensure()
        return self._request(("sync", tenant_id))

    async def search(self, tenant_id: str, k: int, window: int, items: list[Item],
                     keys: dict[str, tuple[str, ...]]) -> RemoteSearch:
        """Send a batch's queries; answers fill the result as they arrive. Waits for the previous search."""
        if self._loop is not None and self._loop is not asyncio.get_running_loop():
            self.close()  # (a child serving another event loop's requests: theirs are gone with it)
        if self._current is not None and not self._current.done:
            await self._current.wait()
        await self._ensure()
        out = self._request(("search", tenant_id, k, window, items, keys))
        self._current = out
        self._tenants.add(tenant_id)
        return out

    def _received(self, message: tuple[Any, ...]) -> None:
        kind, rid = message[0], message[1]
        deadline = time.monotonic() + ANSWER_TIMEOUT_S  # (it answers: the requests it has yet to answer wait on)
        for waiting in self._requests.values():
            waiting._deadline = deadline
        req = self._requests.get(rid)
        if kind == "loading":  # (the deadlines above are all it is for)
            return
        if kind == "hits":
            if req is not None:
                req._answer(message[2], message[3], message[4])
                if message[4]:
                    del self._requests[rid]
        elif kind == "synced":
            if req is not None:
                del self._requests[rid]
                req._answer((), None, True)
        elif kind == "failed":  # (its database, most likely: a new child starts after the rest)
            if req is not None:
                del self._requests[rid]
                req._fail(message[2])
            self._failed(f"it could not answer: {message[2]}")

    def _lost(self, channel: _Channel, reason: str) -> None:
        if channel is self._channel:  # (else: one `close` stopped)
            self._failed(reason)

    def _fail_all(self, reason: str) -> None:
        requests, self._requests = self._requests, {}
        for req in requests.values():
            req._fail(reason)

    def close(self) -> None:
        """Stop the child (its pending requests fail)."""
        self._fail_all("the search process was stopped")
        if self._finalizer is not None:
            self._finalizer()
        self._proc = self._channel = self._loop = self._finalizer = None


def _stop(proc: subprocess.Popen[bytes], transport: asyncio.Transport, sock: socket.socket) -> None:
    """Close the parent's end and stop the child (it only reads: nothing of it needs to finish)."""
    with contextlib.suppress(RuntimeError):  # (its event loop is closed already)
        transport.abort()
    sock.close()  # (the transport closes it on its loop's next turn, if that loop ever runs again)
    if proc.poll() is None:
        proc.kill()  # (not SIGTERM: a stopped or stuck process would not act on it)
    with contextlib.suppress(subprocess.TimeoutExpired):  # (uninterruptible for now: reaped later)
        proc.wait(timeout=1)


# ---------------------------------------------------------------------------------------------------- child


def _read(sock: socket.socket, n: int) -> bytes | None:
    chunks: list[bytes] = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _receive(sock: socket.socket) -> Any:
    head = _read(sock, 4)
    if head is None:
        return None
    data = _read(sock, _LEN.unpack(head)[0])
    return None if data is None else pickle.loads(data)


class _Child:
    """The child's side: one store, one memory (in-process indexes), requests answered in order."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.store: Any = None
        self.memory: Any = None

    def send(self, message: tuple[Any, ...]) -> None:
        self.sock.sendall(_frame(message))

    async def handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "open":
            from breakdesk.memory.service import Memory
            from breakdesk.store import Store

            self.store = await Store.open(message[1], migrate=False)
            self.memory = Memory(self.store, max_resident_cases=message[2], search_process=False)
            return
        rid = message[1]
        try:
            if kind == "sync":
                await self.memory.index(message[2], on_page=lambda: self.send(("loading", rid)))
                self.send(("synced", rid))
            elif kind == "search":
                await self.search(rid, *message[2:])
        except Exception as exc:  # answered, not raised: the parent searches that batch itself
            self.send(("failed", rid, f"{type(exc).__name__}: {exc}"))

    async def search(self, rid: int, tenant_id: str, k: int, window: int, items: list[Item],
                     keys: dict[str, tuple[str, ...]]) -> None:
        from breakdesk.memory.index import text_query
        from breakdesk.memory.service import add_last_resolutions

        idx = await self.memory.index(tenant_id, on_page=lambda: self.send(("loading", rid)))
        last: dict[str, str] = {}
        add_last_resolutions(idx, (item[3] for item in items), last)
        searchable = len(idx) > 0
        start, size = 0, FIRST_SLICE
        first: tuple[dict[str, str], int] | None = (last, idx.last_case_id)
        while True:
            part = items[start:start + size]
            if searchable and part:
                queries = [text_query(*item, keys.get(item[1], ()))[2] for item in part]
                found = idx.similar_many(queries, k, window)
                pairs = [(item[0], tuple(map(tuple, hits))) for item, hits in zip(part, found, strict=True)]
            else:
                pairs = [(item[0], ()) for item in part]
            start += len(part)
            done = start >= len(items)
            self.send(("hits", rid, pairs, first, done))
            if done:
                return
            first, size = None, SLICE


def main(fd: int) -> None:
    """The child: answer requests from the socket `fd` until the parent's end closes."""
    # Ctrl-C at a terminal reaches the whole process group: the parent decides when this process ends (it
    # closes its end, or kills it), and an interrupted child would only print a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=fd)
    sock.setblocking(True)
    child = _Child(sock)
    with asyncio.Runner() as runner:
        try:
            while True:
                message = _receive(sock)
                if message is None:
                    return
                runner.run(child.handle(message))
        finally:
            if child.store is not None:
                runner.run(child.store.close())

