"""Authentication: API keys (hashed, revocable, cached), JWT (HS256, RS256 from a PEM file, ES256 from a
JWKS file), audited failures that never contain a secret, throttling of failing clients, and a server that
refuses to start with JWT enabled but no key."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from breakdesk.api import ApiSettings, ConfigError, create_app
from breakdesk.api.auth import HASHER, create_api_key, parse_api_key, principal_from_claims
from breakdesk.api.rbac import Role

from .conftest import Api

HS_SECRET = "auth-test-secret-0123456789abcdefghij"


async def whoami(api: Api, headers: dict[str, str]) -> Any:
    return await api.client.get("/v1/whoami", headers=headers)


def token(key: Any, alg: str, *, kid: str | None = None, **claims: Any) -> str:
    payload = {"sub": "alice", "exp": int(time.time()) + 300, **claims}
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid} if kid else None)


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


# ------------------------------------------------------------------------------------------------ API keys


async def test_api_key_is_stored_hashed_and_identifies_tenant_and_role(api: Api) -> None:
    t = await api.tenant(packs=False)
    key_id, secret = parse_api_key(t.keys["operator"]) or ("", "")
    stored = await api.store.get_api_key(key_id)
    assert stored is not None and stored.role == "operator" and stored.tenant_id == t.tenant_id
    assert secret not in stored.secret_hash and stored.secret_hash.startswith("$argon2id$")
    assert HASHER.verify(stored.secret_hash, secret)
    r = await whoami(api, t.headers("operator"))
    assert r.status_code == 200
    assert r.json() | {"subject": ""} == {
        "kind": "api-key",
        "subject": "",
        "name": "operator key",
        "tenantId": t.tenant_id,
        "role": "operator",
        "permissions": ["self.read", "tenant.read", "exceptions.read", "intake.read", "metrics.read",
                        "approvals.read", "tools.read", "exceptions.submit", "exceptions.act", "run.what-if"],
    }


@pytest.mark.parametrize(
    "presented",
    [
        "",
        "nonsense",
        "bdk_0123456789abcdef_short",
        "bdk_0123456789abcdef_" + "A" * 43,  # well formed, unknown id
        "bdk_XYZ_" + "A" * 43,
    ],
)
async def test_bad_api_keys_are_401_problems(api: Api, presented: str) -> None:
    r = await whoami(api, {"X-API-Key": presented})
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == "https://breakdesk.dev/problems/unauthorized"
    assert "X-API-Key" in r.headers["www-authenticate"]


async def test_no_credentials_and_ambiguous_credentials(api: Api) -> None:
    t = await api.tenant(packs=False)
    assert (await api.client.get("/v1/whoami")).status_code == 401
    both = {**t.headers("viewer"), "Authorization": "Bearer whatever"}
    assert (await whoami(api, both)).status_code == 401
    assert (await whoami(api, {"Authorization": "Basic dXNlcjpwYXNz"})).status_code == 401
    # JWT is not enabled on this server: a bearer token is refused, not ignored.
    assert (await whoami(api, bearer(token(HS_SECRET, "HS256", tenant=t.tenant_id, roles=["admin"])))).status_code == 401


async def test_wrong_secret_for_a_real_key_id_is_refused(api: Api) -> None:
    t = await api.tenant(packs=False)
    key_id, secret = parse_api_key(t.keys["admin"]) or ("", "")
    forged = f"bdk_{key_id}_{secret[::-1]}"
    assert (await whoami(api, {"X-API-Key": forged})).status_code == 401
    assert (await whoami(api, t.headers("admin"))).status_code == 200
    # a cached key is compared by digest: the forged key still fails after the real one was cached
    assert (await whoami(api, {"X-API-Key": forged})).status_code == 401


async def test_revocation_through_the_api_applies_at_once(api: Api) -> None:
    t = await api.tenant(packs=False)
    key, token_ = await create_api_key(api.store, t.tenant_id, Role.OPERATOR, "soon gone", "tests")
    assert (await whoami(api, {"X-API-Key": token_})).status_code == 200  # now cached
    r = await api.client.delete(f"/v1/tenants/{t.tenant_id}/api-keys/{key.key_id}", headers=t.headers("admin"))
    assert r.status_code == 200 and r.json()["revokedAt"] is not None and r.json()["revokedBy"].startswith("apikey:")
    assert (await whoami(api, {"X-API-Key": token_})).status_code == 401
    audit = await api.store.get_audit(t.tenant_id, f"apikey:{key.key_id}")
    assert [e.action for e in audit] == ["apikey.create", "apikey.revoke"]


async def test_revocation_elsewhere_applies_within_the_cache_time(make_api: Any) -> None:
    async with make_api(api_key_cache_seconds=0.3) as api:
        now = [1000.0]
        api.ctx.auth.clock = lambda: now[0]  # a fake clock: a loaded machine must not age the cache
        t = await api.tenant(packs=False)
        key, token_ = await create_api_key(api.store, t.tenant_id, Role.VIEWER, "cli-revoked", "tests")
        assert (await whoami(api, {"X-API-Key": token_})).status_code == 200
        await api.store.revoke_api_key(t.tenant_id, key.key_id, "cli")  # as `breakdesk apikey revoke` does
        now[0] += 0.1  # before the background refresh (at half the cache time) and before expiry
        assert (await whoami(api, {"X-API-Key": token_})).status_code == 200  # cached, documented
        now[0] += 0.25
        assert (await whoami(api, {"X-API-Key": token_})).status_code == 401


async def test_last_used_is_recorded(api: Api) -> None:
    t = await api.tenant(packs=False)
    key_id, _ = parse_api_key(t.keys["viewer"]) or ("", "")
    assert (await api.store.get_api_key(key_id)).last_used_at is None  # type: ignore[union-attr]
    assert (await whoami(api, t.headers("viewer"))).status_code == 200
    for _ in range(50):
        stored = await api.store.get_api_key(key_id)
        if stored is not None and stored.last_used_at is not None:
            break
        await asyncio.sleep(0.02)
    assert stored is not None and stored.last_used_at is not None


# ------------------------------------------------------------------------------------------ audited failures


async def test_failures_are_audited_without_the_secret(api: Api) -> None:
    t = await api.tenant(packs=False)
    key_id, secret = parse_api_key(t.keys["admin"]) or ("", "")
    wrong_secret = "W" * 43
    unknown = "bdk_fedcba9876543210_" + "S" * 43
    with structlog.testing.capture_logs() as logs:
        await whoami(api, {"X-API-Key": f"bdk_{key_id}_{wrong_secret}"})
        await api.client.get(f"/v1/tenants/{t.tenant_id}/exceptions", headers={"X-API-Key": unknown})
        await api.client.get(f"/v1/tenants/{t.tenant_id}/exceptions", headers=bearer("not.a.jwt"))
    r = await api.client.get(f"/v1/tenants/{t.tenant_id}/auth-failures", headers=t.headers("admin"))
    assert r.status_code == 200
    items = r.json()["items"]
    assert [(i["credential"], i["reason"]) for i in items] == [
        ("jwt", "JWT bearer tokens are not enabled"),
        ("api-key:fedcba9876543210", "unknown API key"),
        (f"api-key:{key_id}", "wrong API key secret"),
    ]
    assert all(i["tenantId"] == t.tenant_id and i["client"] and i["method"] == "GET" for i in items)
    everything = json.dumps(items) + json.dumps(logs, default=str)
    for secret_part in (wrong_secret, "S" * 43, secret, "not.a.jwt"):
        assert secret_part not in everything
    assert any(e["event"] == "auth.failed" for e in logs)
    # the platform sees them too, across tenants
    r = await api.client.get("/v1/auth-failures?limit=1000", headers=api.platform)
    assert {i["credential"] for i in r.json()["items"]} >= {f"api-key:{key_id}", "api-key:fedcba9876543210"}
    # tenant admins of other tenants do not
    other = await api.tenant(packs=False)
    r = await api.client.get(f"/v1/tenants/{other.tenant_id}/auth-failures", headers=other.headers("admin"))
    assert r.json()["items"] == []


async def test_a_failing_client_is_slowed_down_before_more_hashing(make_api: Any) -> None:
    async with make_api(auth_failure_burst=3, auth_failure_rps=0.01) as api:
        t = await api.tenant(packs=False)
        assert (await whoami(api, t.headers("viewer"))).status_code == 200  # verified and cached
        unknown_id = secrets.token_hex(8)
        bad = {"X-API-Key": f"bdk_{unknown_id}_" + "B" * 43}
        assert [(await whoami(api, bad)).status_code for _ in range(3)] == [401, 401, 401]
        r = await whoami(api, bad)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.json()["type"].endswith("/too-many-auth-failures")
        assert (await whoami(api, t.headers("viewer"))).status_code == 200  # a cached key is not blocked
        await api.ctx.failures.flush()
        recorded = await api.store.list_auth_failures(None, limit=100)
        assert len([f for f in recorded if f.credential == f"api-key:{unknown_id}"]) == 3


# ------------------------------------------------------------------------------------------------------ JWT


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def pem_public(key: Any) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


async def test_hs256_tokens(make_api: Any) -> None:
    async with make_api(jwt_hs256_secret=HS_SECRET, jwt_audience="breakdesk", jwt_issuer="https://idp.test") as api:
        t = await api.tenant(packs=False)
        good = dict(tenant=t.tenant_id, roles=["viewer", "approver"], aud="breakdesk", iss="https://idp.test")
        r = await whoami(api, bearer(token(HS_SECRET, "HS256", **good)))
        assert r.status_code == 200, r.text
        assert (r.json()["kind"], r.json()["role"], r.json()["tenantId"], r.json()["subject"]) == (
            "jwt", "approver", t.tenant_id, "alice"
        )
        with_tid = {k: v for k, v in good.items() if k != "tenant"} | {"tid": t.tenant_id}
        assert (await whoami(api, bearer(token(HS_SECRET, "HS256", **with_tid)))).status_code == 200
        refused = [
            token(HS_SECRET, "HS256", **(good | {"exp": int(time.time()) - 3600})),  # expired
            token(HS_SECRET, "HS256", **(good | {"aud": "someone-else"})),
            token(HS_SECRET, "HS256", **(good | {"iss": "https://evil.test"})),
            token("another-secret-of-enough-length-0123456789", "HS256", **good),
            token(HS_SECRET, "HS256", **(good | {"roles": ["superuser"]})),  # no known role
            token(HS_SECRET, "HS256", **{k: v for k, v in good.items() if k != "tenant"}),  # no tenant
            jwt.encode({**good, "sub": "alice", "exp": int(time.time()) + 60}, None, algorithm="none"),
        ]
        for bad in refused:
            r = await whoami(api, bearer(bad))
            assert r.status_code == 401, bad
        await api.ctx.failures.flush()
        reasons = {f.reason for f in await api.store.list_auth_failures(t.tenant_id, limit=100)} | {
            f.reason for f in await api.store.list_auth_failures(None, limit=100)
        }
        assert {"token expired", "wrong audience", "wrong issuer", "bad signature"} <= reasons


async def test_platform_admin_jwt(make_api: Any) -> None:
    async with make_api(jwt_hs256_secret=HS_SECRET) as api:
        r = await api.client.get("/v1/tenants", headers=bearer(token(HS_SECRET, "HS256", roles=["platform-admin"])))
        assert r.status_code == 200
        t = await api.tenant(packs=False)
        r = await api.client.get("/v1/tenants", headers=bearer(token(HS_SECRET, "HS256", tenant=t.tenant_id, roles=["admin"])))
        assert r.status_code == 403


async def test_rs256_from_a_pem_public_key(make_api: Any, tmp_path: Path, rsa_key: Any, ec_key: Any) -> None:
    pem = tmp_path / "idp.pem"
    pem.write_bytes(pem_public(rsa_key))
    async with make_api(jwt_public_key_file=pem) as api:
        t = await api.tenant(packs=False)
        claims = dict(tenant=t.tenant_id, roles=["operator"])
        assert (await whoami(api, bearer(token(rsa_key, "RS256", **claims)))).status_code == 200
        # algorithm confusion: HS256 "signed" with the public key as its secret must not pass
        hs_with_pem = _hs256_raw(pem_public(rsa_key), {"sub": "eve", "exp": int(time.time()) + 60, **claims})
        assert (await whoami(api, bearer(hs_with_pem))).status_code == 401
        assert (await whoami(api, bearer(token(ec_key, "ES256", **claims)))).status_code == 401  # not our key
        assert (await whoami(api, bearer(token(HS_SECRET, "HS256", **claims)))).status_code == 401  # HS not enabled


def _hs256_raw(secret: bytes, claims: dict[str, Any]) -> str:
    """An HS256 token over any bytes (PyJWT refuses PEM-looking secrets, an attacker would not)."""
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


async def test_es256_and_rs256_from_a_jwks_file(make_api: Any, tmp_path: Path, rsa_key: Any, ec_key: Any) -> None:
    jwks = {
        "keys": [
            {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key())), "kid": "ec-1", "use": "sig"},
            {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key())), "kid": "rsa-1"},
        ]
    }
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks))
    async with make_api(jwt_jwks_file=path) as api:
        t = await api.tenant(packs=False)
        claims = dict(tenant=t.tenant_id, roles=["admin"])
        assert (await whoami(api, bearer(token(ec_key, "ES256", kid="ec-1", **claims)))).status_code == 200
        assert (await whoami(api, bearer(token(rsa_key, "RS256", kid="rsa-1", **claims)))).status_code == 200
        assert (await whoami(api, bearer(token(ec_key, "ES256", kid="rsa-1", **claims)))).status_code == 401
        assert (await whoami(api, bearer(token(ec_key, "ES256", kid="unknown", **claims)))).status_code == 401
        assert (await whoami(api, bearer(token(ec_key, "ES256", **claims)))).status_code == 401  # no kid


def test_claims_map_to_the_highest_known_role() -> None:
    p = principal_from_claims({"sub": "bob", "tid": "acme", "roles": ["viewer", "approver", "x"]})
    assert (p.tenant_id, p.role) == ("acme", Role.APPROVER)
    p = principal_from_claims({"sub": "root", "roles": ["platform-admin"]})
    assert p.is_platform and p.tenant_id is None
    p = principal_from_claims({"sub": "c", "tenant": "acme", "role": "operator"})
    assert p.role is Role.OPERATOR
    for bad in (
        {"tenant": "a", "roles": ["admin"]},  # no sub
        {"sub": "a", "tenant": "a", "roles": 3},
        {"sub": "a", "tenant": 5, "roles": ["admin"]},
        {"sub": "a", "roles": ["admin"]},  # a tenant role needs a tenant
    ):
        with pytest.raises(ValueError):
            principal_from_claims(bad)


# ------------------------------------------------------------------------------------------ configuration


def test_jwt_enabled_without_a_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="no key is configured"):
        ApiSettings.from_env({"BREAKDESK_JWT_ENABLED": "true"})
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        ApiSettings.from_env({"BREAKDESK_JWT_HS256_SECRET": "short"})
    assert ApiSettings.from_env({}).jwt_active is False
    assert ApiSettings.from_env({"BREAKDESK_JWT_HS256_SECRET": HS_SECRET}).jwt_active is True


@pytest.mark.parametrize(("variable", "value", "reason"), [
    ("BREAKDESK_APPROVAL_TTL_MINUTES", "a day", "number of minutes"),
    ("BREAKDESK_APPROVAL_TTL_MINUTES", "0", "above 0"),
    ("BREAKDESK_APPROVAL_TTL_MINUTES", "600000", "at most 525600"),
    ("BREAKDESK_EMBED_THREADS", "0", "1 or more"),
    ("BREAKDESK_EMBED_THREADS", "two", "whole number"),
    ("BREAKDESK_MEMORY_MAX_CASES", "-5", "whole number"),
    ("BREAKDESK_MEMORY_TRIAGE_WINDOW", "20k", "whole number"),
])
def test_variables_read_elsewhere_are_checked_at_startup(variable: str, value: str, reason: str) -> None:
    """Not server settings, but a bad value must stop the server at start, naming the variable, rather than
    fall back silently or fail the work that reads it later."""
    with pytest.raises(ConfigError, match=rf"^{variable} .*{reason}.*{value!r}"):
        ApiSettings.from_env({variable: value})
    ApiSettings.from_env({variable: ""})  # empty: unset


def test_good_values_of_variables_read_elsewhere_are_used(monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import timedelta

    from breakdesk.approvals.requests import default_ttl
    from breakdesk.memory.embedders import MiniLMEmbedder

    good = {"BREAKDESK_APPROVAL_TTL_MINUTES": "90", "BREAKDESK_EMBED_THREADS": "3",
            "BREAKDESK_MEMORY_MAX_CASES": "1000", "BREAKDESK_MEMORY_TRIAGE_WINDOW": "0"}
    ApiSettings.from_env(good)
    assert default_ttl(good) == timedelta(minutes=90) and default_ttl({}) == timedelta(hours=24)
    monkeypatch.setenv("BREAKDESK_EMBED_THREADS", "3")
    assert MiniLMEmbedder().threads == 3  # the model itself loads on first use only
    monkeypatch.setenv("BREAKDESK_EMBED_THREADS", "3 threads")
    with pytest.raises(ValueError, match="BREAKDESK_EMBED_THREADS"):
        MiniLMEmbedder()


def test_unusable_key_files_are_refused_at_startup(tmp_path: Path, rsa_key: Any) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        create_app(ApiSettings(jwt_public_key_file=tmp_path / "missing.pem"))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key")
    with pytest.raises(ConfigError, match="not a PEM public key"):
        create_app(ApiSettings(jwt_public_key_file=garbage))
    private_jwks = tmp_path / "private.json"
    private_jwks.write_text(json.dumps({"keys": [{**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key)), "kid": "k"}]}))
    with pytest.raises(ConfigError, match="private key"):
        create_app(ApiSettings(jwt_jwks_file=private_jwks))


def test_serve_refuses_to_start_with_jwt_enabled_and_no_key(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BREAKDESK_")}
    env["BREAKDESK_JWT_ENABLED"] = "true"
    env["BREAKDESK_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    proc = subprocess.run(
        [sys.executable, "-m", "breakdesk", "serve", "--port", "0"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "no key is configured" in proc.stderr
    assert not (tmp_path / "x.db").exists()  # refused before touching the database
