"""A realistic stand-in for every tool of the example finance and healthcare packs (`breakdesk demo-tools`).

Responses are deterministic functions of the request (same order id, same answer), match each tool's declared
output schema, and behave like the real systems would: write endpoints require credentials (401 without),
`openCase` deduplicates on the `Idempotency-Key` it is sent, some settlements have settled since the alert,
some allocations cannot be repaired automatically, some position breaks survive a rebuild. `breakdesk demo`
runs it in-process so the example exceptions are resolved end to end.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections import Counter
from datetime import date, timedelta
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

SERVICE = "breakdesk-demo-tools"
#: The address the example packs' tool URLs point at.
PACK_BASE_URL = "http://127.0.0.1:8765"
#: Secrets the example packs reference, with the demo values `breakdesk demo` provides when they are unset.
DEMO_ENV_SECRETS = {
    "FINANCE_API_TOKEN": "demo-finance-token",
    "ACME_CASES_TOKEN": "demo-acme-cases-token",
    "HEALTHCARE_API_TOKEN": "demo-healthcare-token",
    "RIVERSIDE_CLINICAL_MSG_TOKEN": "demo-riverside-msg-token",
}
DEMO_FILE_SECRETS = {"northwind_relay_key": "demo-northwind-relay-key"}

_CUSIPS = ("037833100", "594918104", "912828YK0", "023135106", "88160R101", "30303M102")
_DAY0 = date(2025, 3, 14)


def _h(*parts: Any) -> int:
    return int(hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:12], 16)


def _pick(seq: tuple[Any, ...], *parts: Any) -> Any:
    return seq[_h(*parts) % len(seq)]


class DemoTools:
    """The Starlette app and its call counters (per tool), so a demo can report what was called."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self._cases: dict[str, str] = {}
        self.app = Starlette(routes=[
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/calls", self.get_calls, methods=["GET"]),
            # finance
            Route("/finance/orders/{orderId}", self.get_order, methods=["GET"]),
            Route("/finance/orders/{orderId}/executions", self.get_executions, methods=["GET"]),
            Route("/finance/orders/{orderId}/allocations", self.get_allocations, methods=["GET"]),
            Route("/finance/positions/{accountId}/{cusip}", self.get_positions, methods=["GET"]),
            Route("/finance/positions/{accountId}/{cusip}/recalculate", self.recalculate_position, methods=["POST"]),
            Route("/finance/cash/{accountId}/{currency}", self.get_cash, methods=["GET"]),
            Route("/finance/settlements/{settleId}", self.get_settlement, methods=["GET"]),
            Route("/finance/settlements/{settleId}/retry", self.retry_settlement, methods=["POST"]),
            Route("/finance/securities/{cusip}", self.get_security, methods=["GET"]),
            Route("/finance/securities/{cusip}", self.update_security, methods=["PATCH"]),
            Route("/finance/reg-reports/{reportId}", self.get_reg_report, methods=["GET"]),
            Route("/finance/reg-reports/{reportId}/resubmit", self.resubmit_reg_report, methods=["POST"]),
            Route("/finance/allocations/{allocId}/repair", self.repair_allocation, methods=["POST"]),
            Route("/finance/allocations/{allocId}/revert", self.revert_allocation, methods=["POST"]),
            Route("/finance/cases", self.open_case, methods=["POST"]),
            Route("/finance/cases/{caseId}/escalate", self.escalate_case, methods=["POST"]),
            Route("/finance/notify", self.notify, methods=["POST"]),
            # healthcare
            Route("/healthcare/claims/{claimId}", self.get_claim, methods=["GET"]),
            Route("/healthcare/claims/{claimId}/authorization", self.attach_authorization, methods=["POST"]),
            Route("/healthcare/claims/{claimId}/reprocess", self.reprocess_claim, methods=["POST"]),
            Route("/healthcare/authorizations/search", self.search_authorizations, methods=["POST"]),
            Route("/healthcare/coding-review", self.coding_review, methods=["POST"]),
            Route("/healthcare/providers/{providerId}/credentials", self.get_credential, methods=["GET"]),
            Route("/healthcare/providers/{providerId}/credentials", self.update_credential, methods=["PUT"]),
            Route("/healthcare/patients/{patientId}/compare/{otherPatientId}", self.compare_patients,
                  methods=["GET"]),
            Route("/healthcare/patients/{survivorId}/merge", self.merge_patients, methods=["POST"]),
            Route("/healthcare/patients/{survivorId}/unmerge", self.unmerge_patients, methods=["POST"]),
            Route("/healthcare/patients/{patientId}/medication-orders", self.medication_orders, methods=["GET"]),
            Route("/healthcare/medication-orders/{orderId}/flag", self.flag_order, methods=["POST"]),
            Route("/healthcare/eligibility", self.eligibility, methods=["POST"]),
            Route("/healthcare/cases", self.open_case, methods=["POST"]),
            Route("/healthcare/notify", self.notify, methods=["POST"]),
        ])

    # ------------------------------------------------------------------------------------------ plumbing

    def _count(self, request: Request) -> None:
        route = request.scope.get("route")
        self.calls[f"{request.method} {getattr(route, 'path', request.url.path)}"] += 1

    @staticmethod
    def _authorized(request: Request) -> bool:
        auth = request.headers.get("authorization", "")
        return (auth.startswith("Bearer ") and len(auth) > 7) or bool(request.headers.get("x-relay-key"))

    async def _write(self, request: Request) -> tuple[dict[str, Any], Response | None]:
        """Count, check credentials, parse the JSON body (write endpoints)."""
        self._count(request)
        if not self._authorized(request):
            return {}, JSONResponse({"error": "missing or invalid credentials"}, status_code=401)
        try:
            body = await request.json()
        except ValueError:
            return {}, JSONResponse({"error": "body must be JSON"}, status_code=400)
        if not isinstance(body, dict):
            return {}, JSONResponse({"error": "body must be a JSON object"}, status_code=400)
        return body, None

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"service": SERVICE, "status": "ok"})

    async def get_calls(self, request: Request) -> Response:
        return JSONResponse(dict(self.calls))

    # ------------------------------------------------------------------------------------------- finance

    async def get_order(self, request: Request) -> Response:
        self._count(request)
        oid = request.path_params["orderId"]
        return JSONResponse({
            "orderId": oid,
            "side": _pick(("BUY", "SELL", "SELL_SHORT"), oid, "side"),
            "quantity": (_h(oid, "qty") % 90 + 10) * 100,
            "price": round(20 + _h(oid, "px") % 300 + (_h(oid, "c") % 100) / 100, 2),
            "cusip": _pick(_CUSIPS, oid),
            "status": "FILLED",
        })

    async def get_executions(self, request: Request) -> Response:
        self._count(request)
        oid = request.path_params["orderId"]
        n = _h(oid, "n") % 3 + 1
        return JSONResponse({"orderId": oid, "executions": [
            {"execId": f"EX-{_h(oid, i) % 100000:05d}", "venue": _pick(("XNYS", "XNAS", "ARCX", "BATS"), oid, i),
             "quantity": (_h(oid, i, "q") % 40 + 1) * 100, "price": round(20 + _h(oid, "px") % 300, 2)}
            for i in range(n)
        ]})

    async def get_allocations(self, request: Request) -> Response:
        self._count(request)
        oid = request.path_params["orderId"]
        repairable = _h(oid, "repair") % 3 != 0
        return JSONResponse({
            "orderId": oid,
            "allocations": [
                {"allocId": f"AL-{_h(oid, i) % 10000:04d}", "accountId": f"ACC-{_h(oid, i, 'a') % 90 + 10}",
                 "quantity": (_h(oid, i, "q") % 50 + 1) * 100, "status": "FAILED" if i == 0 else "AFFIRMED"}
                for i in range(2)
            ],
            "repairable": repairable,
            "reason": "standing settlement instructions now on file" if repairable
            else "account restricted: needs operations",
        })

    async def get_positions(self, request: Request) -> Response:
        self._count(request)
        acc, cusip = request.path_params["accountId"], request.path_params["cusip"]
        qty = (_h(acc, cusip) % 500 + 1) * 100
        brk = (_h(acc, cusip, "b") % 20 - 10) * 10 or 50
        return JSONResponse({"accountId": acc, "cusip": cusip, "quantity": qty, "custodianQuantity": qty - brk,
                             "breakQty": brk})

    async def recalculate_position(self, request: Request) -> Response:
        _, denied = await self._write(request)
        if denied:
            return denied
        acc, cusip = request.path_params["accountId"], request.path_params["cusip"]
        survives = _h(acc, cusip, "survive") % 4 == 0
        return JSONResponse({"quantity": (_h(acc, cusip) % 500 + 1) * 100,
                             "remainingBreakQty": (_h(acc, cusip, "r") % 9 + 1) * 10 if survives else 0})

    async def get_cash(self, request: Request) -> Response:
        self._count(request)
        acc, ccy = request.path_params["accountId"], request.path_params["currency"]
        return JSONResponse({"accountId": acc, "currency": ccy, "movements": [
            {"cashId": f"CM-{_h(acc, ccy, i) % 100000:05d}", "amount": round((_h(acc, i) % 200000 - 100000) / 10, 2),
             "valueDate": (_DAY0 - timedelta(days=i)).isoformat(),
             "cashType": _pick(("TRADE", "FEE", "INCOME", "FX"), acc, i)}
            for i in range(3)
        ]})

    async def get_settlement(self, request: Request) -> Response:
        self._count(request)
        sid = request.path_params["settleId"]
        status = _pick(("FAILED", "FAILED", "PARTIAL", "SETTLED"), sid, "status")
        body: dict[str, Any] = {"settleId": sid, "status": status, "ssiId": f"SSI-{_h(sid) % 9000 + 1000}"}
        if status != "SETTLED":
            body["failReason"] = _pick(("LATE_AFFIRMATION", "LATE_MATCHING", "CSD_TECHNICAL"), sid)
        return JSONResponse(body)

    async def retry_settlement(self, request: Request) -> Response:
        body, denied = await self._write(request)
        if denied:
            return denied
        return JSONResponse({"settleId": request.path_params["settleId"], "status": "RESUBMITTED",
                             "reason": body.get("reason", "")})

    async def get_security(self, request: Request) -> Response:
        self._count(request)
        cusip = request.path_params["cusip"]
        return JSONResponse({"cusip": cusip, "vendorConsensus": _h(cusip, "consensus") % 4 != 0, "attributes": {
            "issuerName": _pick(("Apple Inc.", "Microsoft Corp", "US Treasury", "Amazon.com Inc"), cusip),
            "sector": _pick(("Technology", "Government", "Consumer Discretionary"), cusip),
        }})

    async def update_security(self, request: Request) -> Response:
        body, denied = await self._write(request)
        if denied:
            return denied
        return JSONResponse({"cusip": request.path_params["cusip"], "attribute": body.get("attribute"),
                             "updated": True})

    async def get_reg_report(self, request: Request) -> Response:
        self._count(request)
        rid = request.path_params["reportId"]
        return JSONResponse({"reportId": rid, "regime": _pick(("CAT", "MIFIR", "EMIR"), rid), "status": "REJECTED",
                             "rejectReason": _pick(("INVALID_CUSTOMER_ID", "LEI_LAPSED", "MISSING_FDID"), rid)})

    async def resubmit_reg_report(self, request: Request) -> Response:
        _, denied = await self._write(request)
        if denied:
            return denied
        rid = request.path_params["reportId"]
        return JSONResponse({"reportId": rid, "status": "SUBMITTED", "submissionId": f"SUB-{_h(rid) % 10**6:06d}"})

    async def repair_allocation(self, request: Request) -> Response:
        _, denied = await self._write(request)
        if denied:
            return denied
        return JSONResponse({"allocId": request.path_params["allocId"], "status": "AFFIRMED"})

    async def revert_allocation(self, request: Request) -> Response:
        _, denied = await self._write(request)
        if denied:
            return denied
        return JSONResponse({"allocId": request.path_params["allocId"], "status": "FAILED"})

    async def open_case(self, request: Request) -> Response:
        body, denied = await self._write(request)
        if denied:
            return denied
        key = request.headers.get("idempotency-key") or f"{body.get('caseType')}|{body.get('reference')}"
        case_id = self._cases.setdefault(key, f"CASE-{_h(key) % 10**7:07d}")  # a repeat gets the same case
        return JSONResponse({"caseId": case_id, "queue": body.get("queue", "operations")}, status_code=201)

    async def escalate_case(self, request: Request) -> Response:
        body, denied = await self._write(request)
        if denied:
            return denied
        return JSONResponse({"caseId": request.path_params["caseId"], "queue": body.get("queue"),
                             "status": "ESCALATED"})

    async def notify(self, request: Request) -> Response:
        body, denied = await self._write(request)
        if denied:
            return denied
        return JSONResponse({"delivered": True, "team": body.get("team"),
                             "messageId": f"MSG-{_h(body.get('team'), body.get('message')) % 10**8:08d}"})

    # ---------------------------------------------------------------------------------------- healthcare

    async def get_claim(self, request: Request) -> Response:
        self._count(request)
        cid = request.path_params["claimId"]
        has_auth = _h(cid, "auth") % 4 == 0
        return JSONResponse({
            "claimId": cid,
            "status": "DENIED",
            "procedureCodes": [_pick(("99213", "99214", "70553", "27447", "93000"), cid, i) for i in range(2)],
            "authId": f"AUTH-{_h(cid) % 10**6:06d}" if has_auth else None,
        })

    async def search_authorizations(self, request: Request) -> Response:
        self._count(request)
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "body must be JSON"}, status_code=400)
        pid = str(body.get("patientId", ""))
        found = _h(pid, "authorized") % 3 != 0
        auths = [{"authId": f"AUTH-{_h(pid) % 10**6:06d}", "status": "APPROVED",
                  "validFrom": (_DAY0 - timedelta(days=30)).isoformat(),
                  "validTo": (_DAY0 + timedelta(days=60)).isoformat()}] if found else []
        return JSONResponse({"authorizations": auths})

    async def attach_authorization(self, request: Request) -> Response:
        body, denied = await self._write(request)
        if denied:
            return denied
        return JSONResponse({"claimId": request.path_params["claimId"], "authId": body.get("authId"),
                             "attached": True})

    async def reprocess_claim(self, request: Request) -> Response:
        _, denied = await self._write(request)
        if denied:
            return denied
        return JSONResponse({"claimId": request.path_params["claimId"], "status": "RESUBMITTED"})

    async def coding_review(self, request: Request) -> Response:
        body, denied = await self._write(request)
        if denied:
            return denied
        return JSONResponse({"claimId": body.get("claimId"), "queued": True,
                             "position": _h(body.get("claimId")) % 40 + 1})

    async def get_credential(self, request: Request) -> Response:
        self._count(request)
        pid = request.path_params["providerId"]
        verified = _h(pid, "renewed") % 3 != 0
        body: dict[str, Any] = {
            "providerId": pid,
            "credentialType": _pick(("STATE_LICENSE", "DEA", "BOARD_CERTIFICATION"), pid),
            "status": "EXPIRED",
            "expiryDate": (_DAY0 - timedelta(days=_h(pid) % 20)).isoformat(),
            "renewalVerified": verified,
        }
        if verified:
            body["renewedExpiryDate"] = (_DAY0 + timedelta(days=730)).isoformat()
        return JSONResponse(body)

    async def update_credential(self, request: Request) -> Response:
        body, denied = await self._write(request)
        if denied:
            return denied
        return JSONResponse({"providerId": request.path_params["providerId"], "expiryDate": body.get("expiryDate"),
                             "updated": True})

    async def compare_patients(self, request: Request) -> Response:
        self._count(request)
        a, b = request.path_params["patientId"], request.path_params["otherPatientId"]
        score = round(0.8 + (_h(a, b) % 200) / 1000, 3)
        differing = [] if score >= 0.95 else [_pick(("dateOfBirth", "lastName", "address"), a, b)]
        return JSONResponse({"matchScore": score, "differingFields": differing})

    async def merge_patients(self, request: Request) -> Response:
        body, denied = await self._write(request)
        if denied:
            return denied
        return JSONResponse({"survivorId": request.path_params["survivorId"], "merged": body.get("duplicateId")})

    async def unmerge_patients(self, request: Request) -> Response:
        body, denied = await self._write(request)
        if denied:
            return denied
        return JSONResponse({"survivorId": request.path_params["survivorId"], "restored": body.get("duplicateId")})

    async def medication_orders(self, request: Request) -> Response:
        self._count(request)
        pid = request.path_params["patientId"]
        return JSONResponse({"patientId": pid, "orders": [
            {"orderId": f"MO-{_h(pid, i) % 10**5:05d}", "drug": _pick(("apixaban", "warfarin", "metoprolol"), pid, i),
             "status": "ACTIVE"} for i in range(2)
        ]})

    async def flag_order(self, request: Request) -> Response:
        body, denied = await self._write(request)
        if denied:
            return denied
        return JSONResponse({"orderId": request.path_params["orderId"], "risk": body.get("risk"), "held": True})

    async def eligibility(self, request: Request) -> Response:
        self._count(request)
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "body must be JSON"}, status_code=400)
        member = str(body.get("memberId", ""))
        active = _h(member, "active") % 3 != 0
        return JSONResponse({"active": active, "planType": _pick(("HMO", "PPO", "MEDICAID"), member),
                             "terminationDate": None if active else (_DAY0 - timedelta(days=15)).isoformat()})


# ------------------------------------------------------------------------------------------------ serving


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class BackgroundServer:
    """Runs the demo tools in a daemon thread (uvicorn with its own event loop) until `stop`."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.tools = DemoTools()
        self.host = host
        self.port = port or free_port(host)
        config = uvicorn.Config(self.tools.app, host=host, port=self.port, log_level="warning", lifespan="off",
                                access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="demo-tools", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the demo tool server did not start on {self.base_url}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)


def serve(host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve in the foreground (blocking) until interrupted."""
    uvicorn.run(DemoTools().app, host=host, port=port, log_level="info", lifespan="off")
