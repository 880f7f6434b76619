"""API server settings: one pydantic model, read from `BREAKDESK_*` environment variables.

Every field `name` is set by `BREAKDESK_<NAME>` (for example `BREAKDESK_RATE_LIMIT_RPS=50`). Settings are
checked before the server binds a port, so a server with JWT enabled but no key never starts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from breakdesk import envvars

ENV_PREFIX = "BREAKDESK_"
MIB = 1024 * 1024


class ConfigError(Exception):
    """The server configuration is unusable; the message says which variable to fix."""


class ApiSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    database_url: str | None = Field(None, description="SQLAlchemy URL; default sqlite ./breakdesk.db.")
    auto_migrate: bool = Field(True, description="Apply migrations on start (else /readyz reports them).")
    db_pool_size: int = Field(
        32, ge=1, le=1000, description="Database connections kept open (concurrent requests share them)."
    )
    db_max_overflow: int = Field(32, ge=0, le=1000, description="Extra connections allowed under bursts.")

    jwt_enabled: bool | None = Field(None, description="Accept JWT bearer tokens; default: when a key is set.")
    jwt_hs256_secret: SecretStr | None = Field(None, description="Shared secret for HS256 (32+ bytes).")
    jwt_public_key_file: Path | None = Field(None, description="PEM public key for RS256 (RSA) or ES256 (EC).")
    jwt_jwks_file: Path | None = Field(None, description="JWKS file: RS256/ES256 keys chosen by `kid`.")
    jwt_audience: str | None = Field(None, description="Required `aud` claim, when set.")
    jwt_issuer: str | None = Field(None, description="Required `iss` claim, when set.")
    jwt_leeway_seconds: float = Field(30.0, ge=0, le=600, description="Clock skew allowed on `exp`/`nbf`.")

    api_key_cache_seconds: float = Field(
        30.0, ge=0, le=3600, description="How long a verified API key is trusted without re-checking the store."
    )

    rate_limit_rps: float = Field(200.0, gt=0, description="Default requests per second per tenant.")
    rate_limit_burst: int = Field(400, ge=1, description="Default burst per tenant.")
    max_body_bytes: int = Field(5 * MIB, ge=1024, description="Default body limit of exception submissions.")
    max_batch_items: int = Field(1000, ge=1, le=100_000, description="Default items per submission.")
    max_request_bytes: int = Field(12 * MIB, ge=1024, description="Hard body limit of any request.")
    wait_max_items: int = Field(100, ge=1, le=10_000, description="Items a ?wait=true submission may carry.")
    auth_failure_rps: float = Field(2.0, gt=0, description="Failed authentications per second per client.")
    auth_failure_burst: int = Field(20, ge=1, description="Failed authentications a client may burst.")
    tenant_cache_seconds: float = Field(5.0, ge=0, le=600, description="How long tenant settings are cached.")

    worker_enabled: bool = Field(
        True, description="Run the in-process intake worker, approval and resume scheduler and memory indexer."
    )
    worker_batch_size: int = Field(100, ge=1, le=5000, description="Queue items claimed per cycle.")
    worker_lease_seconds: float = Field(
        60.0, gt=0, le=86_400, description="How long a claim lasts; a dead worker's items return after it."
    )
    worker_poll_seconds: float = Field(0.5, gt=0, le=60, description="Idle poll interval (new work wakes it).")
    worker_max_attempts: int = Field(5, ge=1, le=1000, description="Attempts before an item is dead-lettered.")
    execution_enabled: bool = Field(
        True, description="Run approved plans' tools (else plans are recorded and left IN_PROGRESS)."
    )
    scheduler_interval_seconds: float = Field(
        15.0, gt=0, le=3600, description="How often the worker expires approvals and resumes stalled runs."
    )
    stalled_after_seconds: float = Field(
        120.0, gt=0, le=86_400, description="An IN_PROGRESS run untouched this long is resumed by the scheduler."
    )

    memory_indexer_enabled: bool = Field(
        True, description="With the worker: index resolutions and changed exceptions, and embed cases, in the "
        "background (what `breakdesk memory index --follow` does on its own).",
    )
    memory_index_interval_seconds: float = Field(
        5.0, gt=0, le=3600, description="Pause between the background memory indexer's passes over the tenants."
    )

    metrics_enabled: bool = Field(True, description="Serve Prometheus metrics at /metrics.")
    access_log: bool = Field(True, description="One JSON log line per request.")
    log_level: str = Field("info", pattern=r"^(?i:debug|info|warning|error|critical)$")

    @model_validator(mode="after")
    def _check_jwt(self) -> ApiSettings:
        secret = self.jwt_hs256_secret.get_secret_value() if self.jwt_hs256_secret is not None else None
        if secret is not None and len(secret.encode()) < 32:
            raise ValueError("BREAKDESK_JWT_HS256_SECRET must be at least 32 bytes")
        if self.jwt_enabled and not self.jwt_key_configured:
            raise ValueError(
                "JWT is enabled but no key is configured: set BREAKDESK_JWT_HS256_SECRET, "
                "BREAKDESK_JWT_PUBLIC_KEY_FILE or BREAKDESK_JWT_JWKS_FILE (there is no default secret)"
            )
        if self.max_body_bytes > self.max_request_bytes:
            raise ValueError("BREAKDESK_MAX_BODY_BYTES cannot exceed BREAKDESK_MAX_REQUEST_BYTES")
        return self

    @property
    def jwt_key_configured(self) -> bool:
        return any(v is not None for v in (self.jwt_hs256_secret, self.jwt_public_key_file, self.jwt_jwks_file))

    @property
    def jwt_active(self) -> bool:
        """JWTs are accepted when enabled explicitly, or by default whenever a key is configured."""
        return self.jwt_key_configured if self.jwt_enabled is None else self.jwt_enabled

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ApiSettings:
        """Settings from `BREAKDESK_*` variables (empty values count as unset), then `overrides`."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            raw = env.get(ENV_PREFIX + name.upper())
            if raw is not None and raw.strip() != "":
                values[name] = raw.strip()
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            settings = cls.model_validate(values)
        except ValidationError as exc:
            raise ConfigError(describe(exc)) from None
        try:
            envvars.check(env)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return settings


def describe(exc: ValidationError) -> str:
    """One line per problem, naming the environment variable rather than the field."""
    lines = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err.get("loc", ())]
        where = ENV_PREFIX + loc[0].upper() if loc else "settings"
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        lines.append(msg if not loc else f"{where}: {msg}")
    return "; ".join(lines)
