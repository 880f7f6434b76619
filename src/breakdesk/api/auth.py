"""Authentication: API keys (argon2-hashed at rest) and JWT bearer tokens, both mapped to a `Principal`.

API keys look like `bdk_<key id>_<secret>`. The key id finds the stored row; argon2 checks the secret in
constant time. Argon2 is deliberately slow, so a key that verified is remembered for a short while, keyed by
its id and compared by SHA-256 digest with `hmac.compare_digest`; revoking a key drops it from this cache at
once in the revoking process, and everywhere else after at most `api_key_cache_seconds`.

Under load the cache must never expire for everyone at once: concurrent misses of one key share a single
lookup and argon2 check, and a busy key is re-read from the store in the background once half its time is
up (the row only: the argon2 result stands while the stored hash is unchanged), so its callers never wait.
The renewed entry again lasts from the moment the row was read, which keeps the revocation bound.

Every rejected credential is recorded (who, why, where from — never the secret) and counted; a client that
keeps failing is slowed down with 429 before any more argon2 work is spent on it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from starlette.requests import Request

from breakdesk.api.limits import RateLimiter
from breakdesk.api.observe import ApiMetrics, get_logger
from breakdesk.api.problems import ApiProblem
from breakdesk.api.rbac import Role
from breakdesk.api.settings import ApiSettings, ConfigError
from breakdesk.store import Store
from breakdesk.store._base import utcnow
from breakdesk.store.apikeys import ApiKey, AuthFailure

T = TypeVar("T")

KEY_PREFIX = "bdk"
_KEY_RE = re.compile(r"^bdk_([0-9a-f]{16})_([A-Za-z0-9_-]{32,128})$")

#: OWASP's argon2id minimum (19 MiB, 2 passes): about 20 ms per check, which the verified-key cache hides.
HASHER = PasswordHasher(time_cost=2, memory_cost=19_456, parallelism=1)
_DUMMY_HASH = HASHER.hash(secrets.token_urlsafe(32))

JWT_ALGORITHMS = ("HS256", "RS256", "ES256")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the credential, its tenant (None for platform admins) and its role."""

    kind: str  # "api-key" | "jwt"
    subject: str  # key id or JWT `sub`
    name: str
    tenant_id: str | None
    role: Role

    @property
    def is_platform(self) -> bool:
        return self.role >= Role.PLATFORM_ADMIN

    @property
    def actor(self) -> str:
        """How the principal is named in audit entries and logs."""
        return f"{'apikey' if self.kind == 'api-key' else 'jwt'}:{self.subject}"[:200]

    def can_access(self, tenant_id: str) -> bool:
        return self.is_platform or self.tenant_id == tenant_id


@dataclass(frozen=True, slots=True)
class NewKey:
    key_id: str
    secret: str

    @property
    def token(self) -> str:
        """The full key, shown once to whoever created it."""
        return f"{KEY_PREFIX}_{self.key_id}_{self.secret}"


def generate_api_key() -> NewKey:
    return NewKey(secrets.token_hex(8), secrets.token_urlsafe(32))


def hash_secret(secret: str) -> str:
    return HASHER.hash(secret)


def parse_api_key(token: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None."""
    match = _KEY_RE.match(token.strip())
    return (match.group(1), match.group(2)) if match else None


async def create_api_key(store: Store, tenant_id: str | None, role: Role, name: str, by: str) -> tuple[ApiKey, str]:
    """Generate, hash and store a key; returns the stored row and the full key (never stored)."""
    new = generate_api_key()
    secret_hash = await asyncio.to_thread(hash_secret, new.secret)
    key = await store.create_api_key(tenant_id, new.key_id, secret_hash, role.label, name, by)
    return key, new.token


# ---------------------------------------------------------------------------------------------------- JWT


@dataclass(frozen=True, slots=True)
class _JwtKey:
    algorithm: str
    key: Any


def _algorithm_of(key: Any, source: str) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name != "secp256r1":
            raise ConfigError(f"{source}: EC keys must be on P-256 (ES256), got {key.curve.name}")
        return "ES256"
    raise ConfigError(f"{source}: only RSA (RS256) and EC P-256 (ES256) public keys are supported")


class JwtVerifier:
    """Checks signature, expiry, audience and issuer. The key decides the algorithm (never the token), so a
    token cannot pick HS256 with a public key as its secret."""

    def __init__(self, settings: ApiSettings) -> None:
        self.audience = settings.jwt_audience
        self.issuer = settings.jwt_issuer
        self.leeway = settings.jwt_leeway_seconds
        self.secret = settings.jwt_hs256_secret.get_secret_value() if settings.jwt_hs256_secret else None
        self.public: _JwtKey | None = None
        self.by_kid: dict[str, _JwtKey] = {}
        if settings.jwt_public_key_file is not None:
            self.public = self._load_pem(settings.jwt_public_key_file)
        if settings.jwt_jwks_file is not None:
            self.by_kid = self._load_jwks(settings.jwt_jwks_file)
        if self.secret is None and self.public is None and not self.by_kid:
            raise ConfigError("JWT is enabled but no key is configured (there is no default secret)")

    @staticmethod
    def _read(path: Path, what: str) -> bytes:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the JWT {what} {path}: {exc.strerror or exc}") from None

    def _load_pem(self, path: Path) -> _JwtKey:
        try:
            key = load_pem_public_key(self._read(path, "public key file"))
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{path}: not a PEM public key ({exc})") from None
        return _JwtKey(_algorithm_of(key, str(path)), key)

    def _load_jwks(self, path: Path) -> dict[str, _JwtKey]:
        try:
            doc = json.loads(self._read(path, "JWKS file"))
        except ValueError as exc:
            raise ConfigError(f"{path}: not JSON ({exc})") from None
        keys = doc.get("keys") if isinstance(doc, dict) else None
        if not isinstance(keys, list) or not keys:
            raise ConfigError(f"{path}: a JWKS needs a non-empty 'keys' list")
        out: dict[str, _JwtKey] = {}
        for n, jwk in enumerate(keys):
            if not isinstance(jwk, dict) or not isinstance(jwk.get("kid"), str) or not jwk["kid"]:
                raise ConfigError(f"{path}: keys[{n}] needs a 'kid'")
            if jwk.get("kty") not in ("RSA", "EC") or jwk.get("alg", "RS256" if jwk.get("kty") == "RSA" else "ES256") not in ("RS256", "ES256"):
                raise ConfigError(f"{path}: keys[{n}] must be an RS256 (RSA) or ES256 (EC P-256) public key")
            if "d" in jwk:
                raise ConfigError(f"{path}: keys[{n}] is a private key; a JWKS file must hold public keys only")
            try:
                parsed = jwt.PyJWK(jwk)
            except jwt.PyJWTError as exc:
                raise ConfigError(f"{path}: keys[{n}]: {exc}") from None
            out[jwk["kid"]] = _JwtKey(_algorithm_of(parsed.key, f"{path}: keys[{n}]"), parsed.key)
        return out

    def _key_for(self, header: Mapping[str, Any]) -> _JwtKey | None:
        alg = header.get("alg")
        kid = header.get("kid")
        if alg == "HS256":
            return _JwtKey("HS256", self.secret) if self.secret is not None else None
        if alg not in ("RS256", "ES256"):
            return None
        if isinstance(kid, str) and kid in self.by_kid:
            found = self.by_kid[kid]
            return found if found.algorithm == alg else None
        if self.public is not None and self.public.algorithm == alg:
            return self.public
        return None

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims; raises `ValueError` with a reason (no secrets) when it is not acceptable."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise ValueError("malformed token") from None
        key = self._key_for(header)
        if key is None:
            raise ValueError(f"no key for alg {str(header.get('alg'))[:10]!r} kid {str(header.get('kid'))[:40]!r}")
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise ValueError("token expired") from None
        except jwt.InvalidAudienceError:
            raise ValueError("wrong audience") from None
        except jwt.InvalidIssuerError:
            raise ValueError("wrong issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            raise ValueError(f"missing claim {exc.claim}") from None
        except jwt.InvalidSignatureError:
            raise ValueError("bad signature") from None
        except jwt.PyJWTError as exc:
            raise ValueError(f"invalid token ({type(exc).__name__})") from None
        return dict(claims)


def principal_from_claims(claims: Mapping[str, Any]) -> Principal:
    """`tenant` (or `tid`), `roles` (or `role`) and `sub`; the highest known role wins."""
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > 200:
        raise ValueError("claim sub must be a non-empty string")
    raw_roles = claims.get("roles", claims.get("role"))
    names = [raw_roles] if isinstance(raw_roles, str) else raw_roles
    if not isinstance(names, list) or not all(isinstance(r, str) for r in names):
        raise ValueError("claim roles must be a list of strings")
    roles = [r for r in (Role.parse(n) for n in names) if r is not None]
    if not roles:
        raise ValueError("no known role in claim roles")
    role = max(roles)
    tenant = claims.get("tenant", claims.get("tid"))
    if tenant is not None and (not isinstance(tenant, str) or not tenant or len(tenant) > 100):
        raise ValueError("claim tenant must be a tenant id")
    if role < Role.PLATFORM_ADMIN and tenant is None:
        raise ValueError("claim tenant is required for tenant roles")
    name = claims.get("name") if isinstance(claims.get("name"), str) else sub
    return Principal("jwt", sub, str(name)[:200], None if role >= Role.PLATFORM_ADMIN else tenant, role)


# --------------------------------------------------------------------------------------- failure records


class FailureLog:
    """Buffers failed authentications and writes them in batches (a flood must not mean a write each)."""

    def __init__(self, store: Store, metrics: ApiMetrics) -> None:
        self.store = store
        self.metrics = metrics
        self.log = get_logger("breakdesk.api.auth")
        self._pending: list[AuthFailure] = []
        self._lock = asyncio.Lock()
        self._flusher: asyncio.Task[None] | None = None

    def record(self, request: Request, tenant_id: str | None, credential: str, reason: str) -> None:
        client = request.client.host if request.client else "unknown"
        failure = AuthFailure(utcnow(), tenant_id, credential, reason, request.method, request.url.path, client)
        self._pending.append(failure)
        self.metrics.auth_failures.labels(reason.split(" (")[0][:40]).inc()
        self.log.warning(
            "auth.failed", credential=credential, reason=reason, tenant=tenant_id, method=request.method,
            path=request.url.path, client=client,
        )
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(0.2)
        await self.flush()

    async def flush(self) -> None:
        """Write what is buffered; a failure to write is logged, never raised into a request."""
        async with self._lock:
            pending, self._pending = self._pending, []
            by_tenant: dict[str | None, list[AuthFailure]] = {}
            for f in pending:
                by_tenant.setdefault(f.tenant_id, []).append(f)
            for tenant_id, failures in by_tenant.items():
                try:
                    await self.store.record_auth_failures(tenant_id, failures)
                except Exception:
                    self.log.exception("auth.failures_not_recorded", count=len(failures))

    async def close(self) -> None:
        """Write everything buffered. The pending flush is awaited, not cancelled: cancelling a task in the
        middle of a database call can leave its connection stuck while the engine is disposed."""
        if self._flusher is not None and not self._flusher.done():
            await asyncio.wait([self._flusher], timeout=5)
        await self.flush()


# ---------------------------------------------------------------------------------------- authenticator


@dataclass(slots=True)
class _CachedKey:
    digest: bytes
    principal: Principal
    expires: float
    secret_hash: str  # the stored hash the digest verified against: a refresh re-checks only the row
    refresh_after: float = 0.0
    refreshing: bool = False


@dataclass(frozen=True, slots=True)
class _Lookup:
    """The outcome of one store read + argon2 check, shared by the concurrent requests that waited for it."""

    reason: str | None  # None when the key is good; else why it is refused (failure reason)
    stored: ApiKey | None = None
    principal: Principal | None = None


class Authenticator:
    def __init__(
        self,
        store: Store,
        settings: ApiSettings,
        metrics: ApiMetrics,
        failures: FailureLog,
        jwt_verifier: JwtVerifier | None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings
        self.metrics = metrics
        self.failures = failures
        self.jwt = jwt_verifier
        self.throttle = RateLimiter(max_keys=50_000)
        self._keys: dict[str, _CachedKey] = {}
        self._inflight: dict[tuple[str, bytes], asyncio.Task[_Lookup]] = {}
        self._last_touch: dict[str, float] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def forget(self, key_id: str) -> None:
        """Drop a key from the verified-key cache (on revocation)."""
        self._keys.pop(key_id, None)

    def _unauthorized(self, detail: str = "missing or invalid credentials") -> ApiProblem:
        schemes = 'ApiKey header="X-API-Key"' + (', Bearer realm="breakdesk"' if self.jwt is not None else "")
        return ApiProblem("unauthorized", detail, headers={"WWW-Authenticate": schemes})

    def _fail(self, request: Request, tenant_id: str | None, credential: str, reason: str) -> ApiProblem:
        client = request.client.host if request.client else "unknown"
        wait = self.throttle.take(
            f"client:{client}", self.settings.auth_failure_rps, self.settings.auth_failure_burst
        )
        if wait is not None:
            self.metrics.rate_limited.labels("auth-failures").inc()
            return ApiProblem(
                "too-many-auth-failures",
                "too many failed authentications from this client; slow down",
                headers={"Retry-After": str(wait)},
            )
        self.failures.record(request, tenant_id, credential, reason)
        return self._unauthorized()

    def _check_throttle(self, request: Request) -> None:
        client = request.client.host if request.client else "unknown"
        wait = self.throttle.exhausted(
            f"client:{client}", self.settings.auth_failure_rps, self.settings.auth_failure_burst
        )
        if wait is not None:
            self.metrics.rate_limited.labels("auth-failures").inc()
            raise ApiProblem(
                "too-many-auth-failures",
                "too many failed authentications from this client; slow down",
                headers={"Retry-After": str(wait)},
            )

    async def authenticate(self, request: Request) -> Principal:
        """The principal behind the request's X-API-Key or `Authorization: Bearer` header; 401 otherwise."""
        path_tenant = request.path_params.get("tenantId")
        hint = path_tenant[:100] if isinstance(path_tenant, str) else None
        api_key = request.headers.get("x-api-key")
        authorization = request.headers.get("authorization")
        if api_key is not None and authorization is not None:
            raise self._fail(request, hint, "ambiguous", "both X-API-Key and Authorization given")
        if api_key is not None:
            return await self._api_key(request, api_key, hint)
        if authorization is not None:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise self._fail(request, hint, "authorization", "unsupported Authorization scheme")
            if self.jwt is None:
                raise self._fail(request, hint, "jwt", "JWT bearer tokens are not enabled")
            return self._bearer(request, token.strip(), hint)
        raise self._fail(request, hint, "none", "no credentials")

    async def _api_key(self, request: Request, presented: str, hint: str | None) -> Principal:
        parsed = parse_api_key(presented)
        if parsed is None:
            raise self._fail(request, hint, "api-key:malformed", "malformed API key")
        key_id, secret = parsed
        digest = hashlib.sha256(presented.strip().encode()).digest()
        now = self.clock()
        cached = self._keys.get(key_id)
        if cached is not None and cached.expires > now and hmac.compare_digest(cached.digest, digest):
            if now >= cached.refresh_after and not cached.refreshing:
                self._spawn(self._refresh(key_id, cached))
            self._touch(cached.principal, now)
            return cached.principal
        self._check_throttle(request)
        flight = (key_id, digest)
        lookup = self._inflight.get(flight)
        if lookup is None:  # the first of any concurrent misses; the others wait for its result
            lookup = self._inflight[flight] = self._spawn(self._lookup(key_id, secret, digest, now))
            lookup.add_done_callback(lambda _t: self._inflight.pop(flight, None))
        result = await asyncio.shield(lookup)  # a caller that goes away does not cancel the others' lookup
        if result.principal is None:
            tenant = result.stored.tenant_id if result.stored is not None else None
            raise self._fail(request, tenant or hint, f"api-key:{key_id}", result.reason or "invalid API key")
        self._touch(result.principal, now)
        return result.principal

    async def _lookup(self, key_id: str, secret: str, digest: bytes, now: float) -> _Lookup:
        """Read the key's row and check the secret (once for all concurrent requests presenting it)."""
        stored = await self.store.get_api_key(key_id)
        if stored is None:
            await asyncio.to_thread(_verify, _DUMMY_HASH, secret)  # same cost as a real check: ids stay opaque
            return _Lookup("unknown API key")
        if not await asyncio.to_thread(_verify, stored.secret_hash, secret):
            return _Lookup("wrong API key secret", stored)
        verdict = self._verdict(stored)
        if verdict.principal is not None:
            self._remember(key_id, digest, stored.secret_hash, verdict.principal, now)
        return verdict

    @staticmethod
    def _verdict(stored: ApiKey) -> _Lookup:
        """What a stored row whose secret matched allows (revocation and role checked at every read)."""
        if stored.revoked:
            return _Lookup("revoked API key", stored)
        role = Role.parse(stored.role)
        if role is None:
            return _Lookup("API key has an unknown role", stored)
        return _Lookup(None, stored, Principal("api-key", stored.key_id, stored.name, stored.tenant_id, role))

    def _remember(self, key_id: str, digest: bytes, secret_hash: str, principal: Principal, read_at: float) -> None:
        ttl = self.settings.api_key_cache_seconds
        if ttl <= 0:
            return
        self._keys[key_id] = _CachedKey(digest, principal, read_at + ttl, secret_hash, read_at + ttl / 2)
        if len(self._keys) > 100_000:
            self._keys.pop(next(iter(self._keys)))

    async def _refresh(self, key_id: str, entry: _CachedKey) -> None:
        """Re-read a cached key's row before its entry runs out; drop the entry if the key was revoked,
        deleted, re-hashed or lost its role. A failed read leaves the entry to expire on its own."""
        entry.refreshing = True
        read_at = self.clock()  # the renewed entry counts from before the read: the bound stays ttl
        try:
            stored = await self.store.get_api_key(key_id)
        except Exception:
            get_logger("breakdesk.api.auth").warning("apikey.refresh_failed", key_id=key_id)
            entry.refreshing = False
            return
        if self._keys.get(key_id) is not entry:  # forgotten (revoked here) or replaced meanwhile
            return
        verdict = self._verdict(stored) if stored is not None and stored.secret_hash == entry.secret_hash else None
        if verdict is None or verdict.principal is None:
            self._keys.pop(key_id, None)
            return
        self._remember(key_id, entry.digest, entry.secret_hash, verdict.principal, read_at)

    def _spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """A task `close()` waits for; its error is marked retrieved (the awaiting requests report it)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(_settled)
        task.add_done_callback(self._tasks.discard)
        return task

    def _bearer(self, request: Request, token: str, hint: str | None) -> Principal:
        assert self.jwt is not None
        try:
            claims = self.jwt.verify(token)
        except ValueError as exc:
            raise self._fail(request, hint, "jwt", str(exc)) from None
        sub = str(claims.get("sub", ""))[:100]
        try:
            return principal_from_claims(claims)
        except ValueError as exc:
            raise self._fail(request, hint, f"jwt:{sub}", str(exc)) from None

    def _touch(self, principal: Principal, now: float) -> None:
        """Keep `last_used_at` roughly current without a write per request (at most one a minute per key)."""
        if principal.kind != "api-key" or now - self._last_touch.get(principal.subject, -1e9) < 60:
            return
        self._last_touch[principal.subject] = now
        self._spawn(self._write_touch(principal, utcnow()))

    async def _write_touch(self, principal: Principal, at: datetime) -> None:
        try:
            await self.store.touch_api_key(principal.tenant_id, principal.subject, at)
        except Exception:
            get_logger("breakdesk.api.auth").warning("apikey.touch_failed", key_id=principal.subject)

    async def close(self) -> None:
        """Let in-flight `last_used_at` writes finish (see FailureLog.close for why they are not cancelled)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        self._tasks.clear()


def _settled(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _verify(secret_hash: str, secret: str) -> bool:
    try:
        return HASHER.verify(secret_hash, secret)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
