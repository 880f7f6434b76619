"""Similar-case memory: per-tenant hybrid retrieval (lexical + vector + structured), recurrence and the
evidence triage shows. See `service.Memory` (queries), `indexer.MemoryIndexer` (catch-up and embeddings)."""

from breakdesk.memory.index import Filters, Hit, Query, TenantIndex
from breakdesk.memory.service import BatchMemory, Memory, NotIndexed, SimilarResult

__all__ = ["BatchMemory", "Filters", "Hit", "Memory", "NotIndexed", "Query", "SimilarResult", "TenantIndex"]
