#!/usr/bin/env python3
"""Generate the example exception files `examples/finance.jsonl` and `examples/healthcare.jsonl`.

The files are inputs (checked in), not build outputs: `breakdesk demo` and the end-to-end tests read them.
Output is a pure function of (domain, count, seed): a fixed base date, one `random.Random(seed)` and no set
iteration, so the same arguments always produce byte-identical files.

Each file has two parts, interleaved at random while keeping every duplicate and recurrence after the line it
repeats:

* A fixed block of *scenarios* that together exercise the example packs: every exception type (parents
  included), every severity rule with values just above and just below its threshold, every severity override,
  approval rule and guardrail of both tenant policies of the domain (so the two tenants decide differently on
  the same input), detection (untyped payloads, bare payloads without a `rawPayload` envelope, misspelled and
  unknown types), missing fields, duplicates (same idempotencyKey, same sourceSystem + sourceId, same payload
  event id, same exceptionId), recurrences of open exceptions, timestamps in odd formats, and five
  deliberately bad lines so a run shows rejects with line numbers.
* *Filler* up to `count` lines: realistic exceptions drawn from plausible distributions (identifiers with valid
  check digits: CUSIP, ISIN, LEI, NPI, DEA; CPT/ICD-10 codes, NDCs, payers, counterparties...), with small
  fixed shares of duplicates (~3%), recurrences (~3%), id-less lines (~2%) and bad lines (0.2%), so
  `generate(domain, 20_000, seed)` is benchmark material too.

Every line carries an explicit `exceptionId` (EXC-FIN-000001...) except the few that test server-side id
generation, so results can be mapped back to input lines.

    .venv/bin/python scripts/gen_examples.py                       # both files, seed 42, 240 lines each
    .venv/bin/python scripts/gen_examples.py --count 20000 --out-dir /tmp/bench
"""

from __future__ import annotations

import argparse
import bisect
import functools
import hashlib
import itertools
import json
import math
import random
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any

DOMAINS = ("finance", "healthcare")
DEFAULT_SEED = 42
DEFAULT_COUNT = 240
#: "Today" of the example files (a Friday); timestamps fall on the five business days ending here.
BASE_DATE = date(2025, 3, 14)
BUSINESS_DAYS = tuple(BASE_DATE - timedelta(days=d) for d in (4, 3, 2, 1, 0))

Line = dict[str, Any] | str


class FastRandom(random.Random):
    """`random.Random` with cheap choice/randrange/choices (built on random(); the stdlib versions go through
    _randbelow, which made them the generator's hot spot). Deterministic for a seed, like its parent."""

    _cum: dict[tuple[float, ...], list[float]] = {}

    def choice(self, seq: Any) -> Any:
        return seq[int(self.random() * len(seq))]

    def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int:  # type: ignore[override]
        if stop is None:
            start, stop = 0, start
        return start + int(self.random() * (stop - start))

    def choices(self, population: Any, weights: Any = None, *, cum_weights: Any = None, k: int = 1) -> list[Any]:
        if weights is None or k != 1 or cum_weights is not None:
            return super().choices(population, weights, cum_weights=cum_weights, k=k)
        key = tuple(weights)
        cum = self._cum.get(key)
        if cum is None:
            cum = self._cum[key] = list(itertools.accumulate(key))
        return [population[bisect.bisect(cum, self.random() * cum[-1])]]

# ============================================================================================ identifiers


def _cusip_check(base8: str) -> str:
    total = 0
    for i, ch in enumerate(base8):
        v = int(ch) if ch.isdigit() else ord(ch) - 55
        if i % 2 == 1:
            v *= 2
        total += v // 10 + v % 10
    return str((10 - total % 10) % 10)


def _luhn_check(digits: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


@functools.lru_cache(maxsize=4096)
def isin_from_cusip(cusip: str, country: str = "US") -> str:
    body = country + cusip
    return body + _luhn_check("".join(str(int(c, 36)) for c in body))


def _lei(prefix18: str) -> str:
    """ISO 17442 LEI: 18 characters + ISO 7064 MOD 97-10 check digits."""
    num = int("".join(str(int(c, 36)) for c in prefix18 + "00"))
    return f"{prefix18}{98 - num % 97:02d}"


def _lei_for(name: str) -> str:
    """A stable, well-formed (not registered) LEI for a legal entity name."""
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    lou = ("5493", "2138", "7LTW", "9695", "K6Q0")[hash_str(name) % 5]
    return _lei(lou + "00" + "".join(alphabet[hash_str(f"{name}/{i}") % 36] for i in range(12)))


def hash_str(text: str) -> int:
    """A stable string hash (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def _npi(base9: str) -> str:
    """10-digit NPI whose last digit is the Luhn check over the prefix 80840 + the first nine digits."""
    return base9 + _luhn_check("80840" + base9)


def _dea(rng: random.Random) -> str:
    """DEA registration number: registrant type, initial, six digits and a check digit."""
    d = [rng.randrange(10) for _ in range(6)]
    check = (d[0] + d[2] + d[4] + 2 * (d[1] + d[3] + d[5])) % 10
    return rng.choice("ABFM") + rng.choice("BCDGHKLMPRSTW") + "".join(map(str, d)) + str(check)


_MBI_ALPHA = "ACDEFGHJKMNPQRTUVWXY"  # Medicare Beneficiary Identifier letters (no S, L, O, I, B, Z)


def _mbi(rng: random.Random) -> str:
    an = _MBI_ALPHA + "0123456789"
    c = [
        rng.choice("123456789"), rng.choice(_MBI_ALPHA), rng.choice(an), rng.choice("0123456789"),
        rng.choice(_MBI_ALPHA), rng.choice(an), rng.choice("0123456789"), rng.choice(_MBI_ALPHA),
        rng.choice(_MBI_ALPHA), rng.choice("0123456789"), rng.choice("0123456789"),
    ]
    return "".join(c[:4]) + "-" + "".join(c[4:7]) + "-" + "".join(c[7:])


def _uuid(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) % 4]}{h[17:20]}-{h[20:]}"


# ============================================================================================ sentinels


class _Id:
    """An exceptionId assigned in file order; shallow copies of a line share it (same id on resend)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: str | None = None


class _Ts:
    """A timestamp rendered in file order from the line's time; `fmt` None picks a realistic format."""

    __slots__ = ("fmt", "value")

    def __init__(self, fmt: str | None = None) -> None:
        self.fmt = fmt
        self.value: Any = None


_KEEP = object()  # "send the real exception type"

# Timestamp formats integrators actually send, with their share among lines that do not force one.
_TS_FORMATS: tuple[tuple[str, float], ...] = (
    ("Z", 0.52), ("Zms", 0.14), ("-04:00", 0.08), ("+01:00", 0.05), ("+02:00", 0.03), ("epoch_s", 0.04),
    ("epoch_ms", 0.05), ("epoch_s_str", 0.01), ("naive", 0.02), ("space", 0.02), ("date", 0.01),
    ("none", 0.025), ("bad", 0.005),
)
_TS_NAMES = [f for f, _ in _TS_FORMATS]
_TS_CUM = list(itertools.accumulate(w for _, w in _TS_FORMATS))


def _render_ts(dt: datetime, fmt: str) -> Any:
    """`dt` is aware UTC. Returns the value to send (None = leave the field out)."""
    if fmt == "Z":
        return dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    if fmt == "z":
        return dt.strftime("%Y-%m-%dT%H:%M:%Sz")
    if fmt == "Zms":
        return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
    if fmt in ("-04:00", "+01:00", "+02:00", "+05:30"):
        sign = -1 if fmt[0] == "-" else 1
        hh, mm = int(fmt[1:3]), int(fmt[4:6])
        tz = timezone(sign * timedelta(hours=hh, minutes=mm))
        return dt.astimezone(tz).isoformat(timespec="seconds")
    if fmt == "epoch_s":
        return int(dt.timestamp())
    if fmt == "epoch_ms":
        return int(dt.timestamp() * 1000)
    if fmt == "epoch_s_str":
        return str(int(dt.timestamp()))
    if fmt == "epoch_float":
        return round(dt.timestamp(), 3)
    if fmt == "naive":
        return dt.strftime("%Y-%m-%dT%H:%M:%S")
    if fmt == "space":
        return dt.strftime("%Y-%m-%d %H:%M:%S")
    if fmt == "date":
        return dt.date().isoformat()
    if fmt == "bad":  # day-first, as a spreadsheet export writes it: not ISO-8601, so the receive time is used
        return dt.strftime("%d/%m/%Y %H:%M")
    if fmt == "none":
        return None
    raise ValueError(f"unknown timestamp format {fmt!r}")


def _line_times(rng: random.Random, n: int) -> list[float]:
    """n sorted instants (epoch seconds) over the business days: mostly trading hours, some overnight batches."""
    days = [datetime.combine(d, time(), UTC).timestamp() for d in BUSINESS_DAYS]
    rand = rng.random
    out: list[float] = []
    for _ in range(n):
        day = days[int(rand() * len(days))]
        # 15% overnight reconciliation / remittance batches (04:00-06:30 UTC), the rest 07:00-23:00 UTC, London
        # open to New York close, busiest mid-day (triangular)
        secs = 14_400 + rand() * 9_000 if rand() < 0.15 else 25_200 + rng.triangular(0, 57_600, 28_800)
        out.append(day + int(secs * 1000) / 1000)
    out.sort()
    return out


# ============================================================================================ base generator


class _Base:
    domain = ""
    id_prefix = ""
    ts_field = ""  # the domain pack's intake.timestampField
    weights: tuple[tuple[str, float], ...] = ()

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.counters: dict[str, int] = {}
        self.fps: dict[str, set[tuple[Any, ...]]] = {}
        self._type_names = [t for t, _ in self.weights]
        self._type_cum = list(itertools.accumulate(w for _, w in self.weights))

    # -------------------------------------------------------------------------------------- helpers

    def seq(self, name: str, start: int = 1) -> int:
        n = self.counters.get(name, start - 1) + 1
        self.counters[name] = n
        return n

    def unique(self, etype: str, make: Callable[[], tuple[Any, ...]]) -> tuple[Any, ...]:
        """A fingerprint-field tuple not used before for this type (so only intended repeats recur)."""
        used = self.fps.setdefault(etype, set())
        for _ in range(50):
            key = make()
            if key not in used:
                used.add(key)
                return key
        raise RuntimeError(f"could not find an unused fingerprint for {etype}")

    def claim(self, etype: str, key: tuple[Any, ...]) -> None:
        self.fps.setdefault(etype, set()).add(key)

    def lognorm(self, median: float, sigma: float, lo: float, hi: float) -> float:
        return min(hi, max(lo, self.rng.lognormvariate(math.log(median), sigma)))

    def money(self, x: float) -> float:
        return round(x, 2)

    @staticmethod
    def _apply(payload: dict[str, Any], kw: dict[str, Any]) -> dict[str, Any]:
        """Overrides for a generated payload; None removes the field (a source that does not send it)."""
        for k, v in kw.items():
            if v is None:
                payload.pop(k, None)
            else:
                payload[k] = v
        return payload

    def pick_type(self) -> str:
        r = self.rng.random() * self._type_cum[-1]
        for name, c in zip(self._type_names, self._type_cum, strict=True):
            if r < c:
                return name
        return self._type_names[-1]

    def event_id(self, source: str) -> str:
        return f"{source.upper().replace('-', '')[:6]}-{self.seq('event', 700000)}"

    # -------------------------------------------------------------------------------------- lines

    def envelope(
        self,
        etype: str | None,
        source: str | None,
        payload: dict[str, Any],
        *,
        send_type: Any = _KEEP,
        ts: str | object | None = _KEEP,
        ts_in_payload: bool | None = None,
        eid: bool = True,
        key: str | None = None,
        bare: bool = False,
    ) -> dict[str, Any]:
        """One submission. `etype` None sends no type (detection); `send_type` overrides what is sent.

        key: "idem" (idempotencyKey), "event" (payload eventId, the packs' sourceIdField), "source"
        (envelope sourceId) or "none" (only the exceptionId identifies it); None picks one at random.
        ts: a format name to force one, "none" for no timestamp, default a realistic random format.
        """
        rng = self.rng
        payload = dict(payload)
        if key is None:
            r = rng.random()
            key = "idem" if r < 0.35 else "event" if r < 0.75 else "source" if r < 0.85 else "none"
        if key == "event" and source:
            payload["eventId"] = self.event_id(source)
        stamp = _Ts(None if ts is _KEEP else ts)  # type: ignore[arg-type]
        if ts_in_payload is None:
            ts_in_payload = rng.random() < 0.2
        sent = etype if send_type is _KEEP else send_type
        line: dict[str, Any] = {}
        if eid:
            line["exceptionId"] = _Id()
        if bare:
            if source is not None:
                line["sourceSystem"] = source
            if sent is not None:
                line["exceptionType"] = sent
            line.update(payload)
            line[self.ts_field if ts_in_payload else "timestamp"] = stamp
        else:
            if ts_in_payload:
                payload[self.ts_field] = stamp
            if sent is not None:
                line["exceptionType"] = sent
            if source is not None:
                line["sourceSystem"] = source
            if not ts_in_payload:
                line["timestamp"] = stamp
            line["rawPayload"] = payload
        if key == "idem":
            line["idempotencyKey"] = f"{(source or 'src').split('-')[0]}-{_uuid(rng)}"
        elif key == "source" and source:
            line["sourceId"] = f"{source.upper().replace('-', '')[:4]}{rng.randrange(10**9, 10**10)}"
        return line

    # copies used for duplicates and recurrences ------------------------------------------------

    @staticmethod
    def payload_of(line: dict[str, Any]) -> dict[str, Any]:
        if "rawPayload" in line:
            return line["rawPayload"]
        return {k: v for k, v in line.items() if k not in _ENVELOPE}

    def resend(self, line: dict[str, Any]) -> dict[str, Any]:
        """The integrator sends the very same line again (same id, keys and timestamp)."""
        return dict(line)

    def retry_same_key(self, line: dict[str, Any], **changes: Any) -> dict[str, Any]:
        """A retry with the same idempotencyKey but a new exceptionId and receive-side timestamp."""
        assert "idempotencyKey" in line
        out = dict(line)
        out["exceptionId"] = _Id()
        out["timestamp"] = _Ts()
        if changes:
            out["rawPayload"] = {**line["rawPayload"], **changes}
        return out

    def recur(self, line: dict[str, Any], key: str | None = None, *, source: str | None = None,
              send_type: Any = _KEEP, bare: bool | None = None, **changes: Any) -> dict[str, Any]:
        """A new occurrence of the same problem (same fingerprint fields) with its own id and keys."""
        payload = {k: v for k, v in self.payload_of(line).items() if k not in ("eventId", self.ts_field)}
        for k, v in changes.items():
            if v is None:
                payload.pop(k, None)
            else:
                payload[k] = v
        etype = line.get("exceptionType")
        is_bare = "rawPayload" not in line if bare is None else bare
        return self.envelope(
            etype, source or line.get("sourceSystem"), payload, send_type=send_type, key=key, bare=is_bare,
        )

    @staticmethod
    def after(groups: list[list[Line]], original: dict[str, Any], *lines: Line) -> None:
        """Put `lines` in the group of `original`, so the merge keeps them after it."""
        for grp in groups:
            if any(x is original for x in grp):
                grp.extend(lines)
                return
        raise ValueError("original line not found in any group")

    # -------------------------------------------------------------------------------------- to override

    def scenarios(self) -> list[list[Line]]:
        raise NotImplementedError

    def make(self, etype: str) -> tuple[str, dict[str, Any]]:
        raise NotImplementedError

    def unknown(self) -> tuple[str | None, str, dict[str, Any]]:
        raise NotImplementedError

    # -------------------------------------------------------------------------------------- shared bad lines

    def bad_lines(self, sample: dict[str, Any]) -> list[Line]:
        """Five lines a run must reject, each for a different reason."""
        src = sample.get("sourceSystem", "gateway")
        body = {k: v for k, v in self.payload_of(sample).items() if not isinstance(v, _Ts)}
        first = next(iter(body.items()))
        truncated = json.dumps({"exceptionId": f"EXC-{self.id_prefix}-TRUNC", "sourceSystem": src,
                                "rawPayload": body})
        return [
            truncated[: len(truncated) // 2],  # cut off mid-line (a writer died)
            json.dumps([{"sourceSystem": src, "rawPayload": dict([first])}]),  # a batch array, not an object
            {"exceptionId": _Id(), "sourceSystem": src, "timestamp": _Ts(),
             "rawPayload": "&".join(f"{k}={v}" for k, v in list(body.items())[:3])},  # query string payload
            {"exceptionId": _Id(), "exceptionType": sample.get("exceptionType"), "sourceSystem": src,
             "timestamp": _Ts()},  # envelope without any payload
            {"exceptionId": _Id(), "tenantId": "globex-markets" if self.domain == "finance" else "lakeshore-clinic",
             "sourceSystem": src, "timestamp": _Ts(), "rawPayload": dict([first])},  # misrouted to us
        ]

    # -------------------------------------------------------------------------------------- filler

    def filler(self, n: int) -> list[Line]:
        """n realistic lines with small fixed shares of duplicates, recurrences, id-less and bad lines."""
        rng = self.rng
        plan = (["dup"] * round(n * 0.02) + ["retry"] * round(n * 0.01) + ["recur"] * round(n * 0.03)
                + ["noid"] * round(n * 0.02) + ["bad"] * (n // 500) + ["unknown"] * round(n * 0.01))
        plan = plan[:n]
        plan += ["new"] * (n - len(plan))
        rng.shuffle(plan)
        out: list[Line] = []
        originals: list[dict[str, Any]] = []
        keyed: list[dict[str, Any]] = []
        bad_cycle = 0
        for kind in plan:
            if kind == "dup" and originals:
                out.append(self.resend(originals[rng.randrange(len(originals))]))
                continue
            if kind == "retry" and keyed:
                out.append(self.retry_same_key(keyed[rng.randrange(len(keyed))]))
                continue
            if kind == "recur" and originals:
                orig = originals[rng.randrange(len(originals))]
                p = self.payload_of(orig)
                out.append(self.recur(orig, **({"ageDays": p["ageDays"] + 1} if isinstance(p.get("ageDays"), int) else {})))
                continue
            if kind == "bad" and originals:
                out.append(self.bad_lines(originals[-1])[bad_cycle % 5])
                bad_cycle += 1
                continue
            if kind == "unknown":
                sent, source, payload = self.unknown()
                out.append(self.envelope(None, source, payload, send_type=sent))
                continue
            etype = self.pick_type()
            source, payload = self.make(etype)
            r = rng.random()
            detect = r < 0.15
            bare = detect and r < 0.04
            line = self.envelope(None if detect else etype, source, payload, bare=bare, eid=kind != "noid",
                                 key="idem" if kind == "noid" and rng.random() < 0.5 else None)
            out.append(line)
            if kind != "noid":
                originals.append(line)
                if "idempotencyKey" in line and "rawPayload" in line:
                    keyed.append(line)
        return out


_ENVELOPE = frozenset(
    {"exceptionId", "tenantId", "sourceSystem", "exceptionType", "timestamp", "rawPayload", "idempotencyKey", "sourceId"}
)

# ============================================================================================ finance

# (cusip, ticker / description, price, currency, kind) — real CUSIPs; the ISIN is derived with its check digit.
_SECURITIES: tuple[tuple[str, str, float, str], ...] = (
    ("037833100", "Apple Inc.", 213.49, "EQUITY"),
    ("594918104", "Microsoft Corp.", 388.70, "EQUITY"),
    ("023135106", "Amazon.com Inc.", 197.95, "EQUITY"),
    ("67066G104", "NVIDIA Corp.", 121.67, "EQUITY"),
    ("30303M102", "Meta Platforms Inc.", 607.60, "EQUITY"),
    ("88160R101", "Tesla Inc.", 249.98, "EQUITY"),
    ("46625H100", "JPMorgan Chase & Co.", 238.03, "EQUITY"),
    ("478160104", "Johnson & Johnson", 163.88, "EQUITY"),
    ("931142103", "Walmart Inc.", 84.89, "EQUITY"),
    ("30231G102", "Exxon Mobil Corp.", 110.52, "EQUITY"),
    ("742718109", "Procter & Gamble Co.", 167.31, "EQUITY"),
    ("92826C839", "Visa Inc. Class A", 341.08, "EQUITY"),
    ("91324P102", "UnitedHealth Group Inc.", 507.62, "EQUITY"),
    ("437076102", "Home Depot Inc.", 360.81, "EQUITY"),
    ("717081103", "Pfizer Inc.", 25.96, "EQUITY"),
    ("191216100", "Coca-Cola Co.", 70.42, "EQUITY"),
    ("02079K305", "Alphabet Inc. Class A", 165.49, "EQUITY"),
    ("084670702", "Berkshire Hathaway Inc. Class B", 519.74, "EQUITY"),
    ("912828YK0", "US Treasury 1.625% 2029-10-31", 90.41, "GOVT"),
)
_FOREIGN_ISINS: tuple[tuple[str, str, float, str], ...] = (
    ("GB0002634946", "BAE Systems plc", 15.02, "GBP"),
    ("DE0007164600", "SAP SE", 251.35, "EUR"),
    ("FR0000120271", "TotalEnergies SE", 57.46, "EUR"),
    ("NL0010273215", "ASML Holding NV", 654.90, "EUR"),
    ("CH0038863350", "Nestle SA", 88.12, "CHF"),
    ("JP3633400001", "Toyota Motor Corp.", 2731.50, "JPY"),
)
# (name, tier, LEI prefix) — LEIs get valid ISO 7064 check digits.
_COUNTERPARTIES: tuple[tuple[str, str], ...] = (
    ("Goldman Sachs & Co. LLC", "TIER_1"),
    ("J.P. Morgan Securities LLC", "TIER_1"),
    ("Morgan Stanley & Co. LLC", "TIER_1"),
    ("BofA Securities, Inc.", "TIER_1"),
    ("Citigroup Global Markets Inc.", "TIER_1"),
    ("Barclays Capital Inc.", "TIER_2"),
    ("UBS Securities LLC", "TIER_2"),
    ("Deutsche Bank Securities Inc.", "TIER_2"),
    ("Jefferies LLC", "TIER_2"),
    ("RBC Capital Markets, LLC", "TIER_2"),
    ("Virtu Americas LLC", "TIER_3"),
    ("Cantor Fitzgerald & Co.", "TIER_3"),
    ("Stonehaven Prime Brokerage LLC", "WATCHLIST"),
    ("Northwind Securities International Ltd", "INTERNAL"),
)
_VENUES = ("XNYS", "XNAS", "ARCX", "BATS", "IEXG", "EDGX", "XLON", "XETR")
_CCY_WEIGHTS = (("USD", 0.62), ("EUR", 0.12), ("GBP", 0.08), ("JPY", 0.05), ("CAD", 0.03), ("CHF", 0.03),
                ("BRL", 0.02), ("MXN", 0.02), ("HKD", 0.015), ("AUD", 0.015))
_CASH_BANKS = {
    "USD": "JPMorgan Chase Bank, N.A.", "EUR": "Deutsche Bank AG", "GBP": "Barclays Bank PLC",
    "JPY": "MUFG Bank, Ltd.", "CAD": "Royal Bank of Canada", "CHF": "UBS Switzerland AG",
    "BRL": "Itau Unibanco S.A.", "MXN": "BBVA Mexico S.A.", "HKD": "HSBC Hong Kong", "AUD": "Commonwealth Bank of Australia",
}
_FUNDS = ("FUND-GROWTH", "FUND-INCOME", "FUND-SMALLCAP", "FUND-BALANCED", "FUND-TREASURY", "FUND-INTL-EQ")
_FAIL_REASONS = (("LATE_AFFIRMATION", 0.24), ("LATE_MATCHING", 0.12), ("CSD_TECHNICAL", 0.06),
                 ("INSUFFICIENT_SECURITIES", 0.30), ("SSI_MISMATCH", 0.14), ("INSUFFICIENT_CASH", 0.08),
                 ("COUNTERPARTY_DK", 0.06))
_REJECTS = {
    "CAT": ("INVALID_CUSTOMER_ID", "MISSING_FDID", "INVALID_SIDE", "TIMESTAMP_OUT_OF_SEQUENCE", "UNLINKED_ROUTE"),
    "MIFIR": ("LEI_LAPSED", "INVALID_ISIN", "INVALID_BUYER_ID", "PRICE_CURRENCY_MISMATCH"),
    "EMIR": ("UTI_MISSING", "INVALID_COUNTERPARTY_LEI", "VALUATION_MISSING"),
    "SFTR": ("INVALID_COLLATERAL_ISIN", "UTI_MISMATCH"),
}
_SECM_ATTRS = (("issuerName", "STATIC"), ("sector", "STATIC"), ("countryOfRisk", "STATIC"),
               ("exchangeCode", "STATIC"), ("coupon", "ECONOMIC"), ("maturity", "ECONOMIC"),
               ("dayCount", "ECONOMIC"), ("couponFrequency", "ECONOMIC"))


class FinanceGen(_Base):
    domain = "finance"
    id_prefix = "FIN"
    ts_field = "detectedAt"
    weights = (("TRADE_MISMATCH", 0.17), ("FAILED_ALLOCATION", 0.14), ("SETTLEMENT_FAIL", 0.23),
               ("POSITION_BREAK", 0.14), ("CASH_BREAK", 0.16), ("REG_REPORT_REJECTED", 0.08),
               ("SEC_MASTER_MISMATCH", 0.06), ("TRADE_LIFECYCLE", 0.01), ("RECONCILIATION_BREAK", 0.01))

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        self.cpty = [(name, tier, _lei_for(name)) for name, tier in _COUNTERPARTIES]
        self._cp_common = [c for c in self.cpty if c[1] not in ("WATCHLIST", "INTERNAL")]
        self._cp_tier: dict[str, list[tuple[str, str, str]]] = {}
        for c in self.cpty:
            self._cp_tier.setdefault(c[1], []).append(c)
        self.prices: dict[str, float] = {c: p for c, _n, p, _k in _SECURITIES}
        self._ccy = [c for c, _ in _CCY_WEIGHTS]
        self._ccy_w = tuple(w for _, w in _CCY_WEIGHTS)
        self._fr = [c for c, _ in _FAIL_REASONS]
        self._fr_w = tuple(w for _, w in _FAIL_REASONS)

    # ---------------------------------------------------------------------------------- field helpers

    def trade_date(self, age: int = 0) -> str:
        idx = max(0, len(BUSINESS_DAYS) - 1 - age)
        return (BUSINESS_DAYS[idx] if age < len(BUSINESS_DAYS) else BASE_DATE - timedelta(days=age + 2)).isoformat()

    def order_id(self) -> str:
        return f"ORD-2503-{self.seq('order', 104210):06d}"

    def security(self) -> tuple[str, str, float, str]:
        """A listed equity (70%) or a corporate bond of one of the same issuers (valid CUSIP check digit)."""
        rng = self.rng
        if rng.random() < 0.7:
            return _SECURITIES[rng.randrange(len(_SECURITIES) - 1)]
        cusip, name, _, _ = _SECURITIES[rng.randrange(len(_SECURITIES) - 2)]
        issue = rng.choice("ABCDEFGHJK") + rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789")
        base = cusip[:6] + issue
        coupon = rng.choice((1.25, 1.65, 2.4, 2.95, 3.35, 3.85, 4.25, 4.65, 5.1, 5.6))
        year = rng.randrange(2026, 2055)
        cusip = base + _cusip_check(base)
        price = self.prices.setdefault(cusip, round(rng.uniform(84, 104), 3))
        return cusip, f"{name.split(' Class')[0]} {coupon}% {year}", price, "CORP"

    def counterparty(self, tier: str | None = None) -> tuple[str, str, str]:
        if tier is None:  # watchlist names and affiliates are rare
            pool = self._cp_common if self.rng.random() < 0.92 else self.cpty
        else:
            pool = self._cp_tier[tier]
        return self.rng.choice(pool)

    def ccy(self) -> str:
        return self.rng.choices(self._ccy, self._ccy_w)[0]

    def age(self, p0: float = 0.45) -> int:
        r = self.rng.random()
        if r < p0:
            return 0
        return min(9, 1 + int(self.rng.expovariate(0.7)))

    # ---------------------------------------------------------------------------------- per type

    def tm(self, **kw: Any) -> tuple[str, dict[str, Any]]:
        rng = self.rng
        cusip, name, price, _ = self.security()
        px = round(price * (1 + rng.uniform(-0.01, 0.01)), 4)
        notional = kw.get("notional")
        if isinstance(notional, int | float):
            qty = max(1, round(notional / px))
        else:
            qty = int(self.lognorm(9000, 1.1, 100, 2_000_000)) // 100 * 100 or 100
            notional = self.money(qty * px)
        side = rng.choice(("BUY", "BUY", "SELL", "SELL", "SELL_SHORT"))
        cp, _tier, lei = self.counterparty()
        fields = kw.get("mismatchFields") or rng.choice(
            (["price"], ["quantity"], ["price"], ["settlementDate"], ["quantity", "price"], ["counterparty"],
             ["commission"], ["side"] if rng.random() < 0.08 else ["price"]))
        payload = {
            "orderId": self.order_id(), "execId": f"EXE-{self.seq('exec', 5_000_000)}", "cusip": cusip,
            "isin": isin_from_cusip(cusip), "securityName": name, "side": side, "quantity": qty, "price": px,
            "currency": "USD", "notional": notional, "counterparty": cp, "counterpartyLei": lei,
            "venue": rng.choice(_VENUES[:6]), "tradeDate": self.trade_date(rng.randrange(2)), "mismatchFields": fields,
        }
        if "price" in fields:
            payload["brokerPrice"] = round(px + rng.choice((-1, 1)) * rng.choice((0.01, 0.05, 0.1, 0.25, 1.0)), 4)
        if "quantity" in fields:
            payload["brokerQuantity"] = qty + rng.choice((-1, 1)) * rng.choice((100, 500, 1000, qty // 2 or 100))
        if "side" in fields:
            payload["brokerSide"] = "SELL" if side == "BUY" else "BUY"
        kw.pop("notional", None)
        return rng.choice(("matching-engine", "matching-engine", "ctm-gateway")), self._apply(payload, kw)

    def fa(self, **kw: Any) -> tuple[str, dict[str, Any]]:
        rng = self.rng
        cusip, _name, price, _ = self.security()
        acct_type = kw.pop("accountType", None) or rng.choices(("FUND", "SMA", "CUSTOMER", "HOUSE"), (0.35, 0.35, 0.2, 0.1))[0]
        prefix = {"SMA": "SMA", "CUSTOMER": "CUST", "HOUSE": "HOUSE"}.get(acct_type, "ACC")
        acct = rng.choice(_FUNDS) if acct_type == "FUND" else f"{prefix}-{rng.randrange(10000, 99999)}"
        notional = kw.pop("notional", None)
        if notional is None:
            qty = max(100, int(self.lognorm(8_000_000, 1.1, 50_000, 120_000_000) / price) // 100 * 100)
            notional = self.money(qty * price)
        else:
            qty = max(1, round(notional / price))
        payload = {
            "orderId": self.order_id(), "allocId": f"AL-{self.seq('alloc', 880000)}",
            "blockId": f"BLK-{self.seq('block', 41000)}", "accountId": acct, "accountType": acct_type, "cusip": cusip,
            "quantity": qty, "currency": "USD", "notional": notional, "ageDays": self.age(0.55),
            "allocStatus": rng.choices(("FAILED", "REJECTED"), (0.7, 0.3))[0],
            "reason": rng.choice(("MISSING_SSI", "ACCOUNT_RESTRICTED", "QTY_EXCEEDS_BLOCK", "ACCOUNT_CLOSED",
                                  "AFFIRMATION_TIMEOUT")),
            "affirmationPlatform": rng.choice(("DTCC CTM", "DTCC CTM", "Bloomberg TOMS")),
        }
        return rng.choice(("ctm-gateway", "ctm-gateway", "oms")), self._apply(payload, kw)

    def sf(self, **kw: Any) -> tuple[str, dict[str, Any]]:
        rng = self.rng
        foreign = rng.random() < 0.2
        if foreign:
            isin, name, price, ccy = _FOREIGN_ISINS[rng.randrange(len(_FOREIGN_ISINS))]
            ids: dict[str, Any] = {"isin": isin}
            csd = {"GBP": "CREST", "JPY": "JASDEC", "CHF": "SIX SIS"}.get(ccy, "EUROCLEAR")
        else:
            cusip, name, price, _ = self.security()
            ccy, ids, csd = "USD", {"cusip": cusip, "isin": isin_from_cusip(cusip)}, "DTC"
        notional = kw.pop("notional", None)
        if notional is None:
            qty = max(1, int(self.lognorm(1_500_000, 1.5, 5_000, 150_000_000) / price))
            notional = self.money(qty * price)
        else:
            qty = max(1, round(notional / price))
        tier = kw.pop("counterpartyTier", None)
        cp, tier, lei = self.counterparty(tier)
        if "counterparty" in kw:
            cp = kw.pop("counterparty")
            lei = _lei_for(cp)
        age = kw.pop("ageDays", None)
        age = self.age(0.4) if age is None else age
        payload = {
            "settleId": f"ST-{self.seq('settle', 3_100_000)}", "orderId": self.order_id(), **ids,
            "securityName": name, "side": rng.choice(("DELIVER", "RECEIVE")), "quantity": qty, "currency": ccy,
            "notional": notional, "counterparty": cp, "counterpartyTier": tier, "counterpartyLei": lei,
            "intendedSettleDate": self.trade_date(age), "ageDays": age, "status": "FAILED",
            "failReason": rng.choices(self._fr, self._fr_w)[0], "csd": csd,
        }
        src = "custody-feed" if not foreign else rng.choice(("custody-feed", "euroclear-mt548"))
        return src, self._apply(payload, kw)

    def pb(self, acct: str | None = None, cusip: str | None = None, value: float | None = None,
           **kw: Any) -> tuple[str, dict[str, Any]]:
        rng = self.rng

        def key() -> tuple[Any, ...]:
            t = rng.choices(("FUND", "CUSTOMER", "HOUSE"), (0.45, 0.35, 0.2))[0]
            a = rng.choice(_FUNDS) if t == "FUND" else f"{'CUST' if t == 'CUSTOMER' else 'HOUSE'}-{rng.randrange(10000, 99999)}"
            return (a, self.security()[0])

        if acct is None or cusip is None:
            acct, cusip = self.unique("POSITION_BREAK", key)
        else:
            self.claim("POSITION_BREAK", (acct, cusip))
        acct_type = "FUND" if acct.startswith("FUND") else "CUSTOMER" if acct.startswith("CUST") else "HOUSE"
        price = self.prices.get(cusip) or self.prices.get(cusip.rjust(9, "0"), 98.5)
        if value is None:
            ours = int(self.lognorm(40_000, 1.4, 100, 5_000_000))
            brk = max(1, int(self.lognorm(ours * 0.02, 1.3, 1, ours))) * rng.choice((-1, 1))
            value = self.money(brk * price)
        else:
            brk = round(value / price) or (1 if value > 0 else -1)
            ours = abs(brk) * rng.randrange(3, 40)
        payload = {
            "accountId": acct, "accountType": acct_type, "cusip": cusip,
            "isin": isin_from_cusip(cusip) if len(cusip) == 9 else None, "quantity": ours,
            "custodianQuantity": ours - brk, "breakQty": brk, "breakValue": value, "currency": "USD",
            "asOfDate": self.trade_date(1), "ageDays": self.age(0.5),
            "custodian": rng.choice(("BNY Mellon", "State Street", "Northern Trust", "Citi Custody")),
        }
        return "recon-engine", self._apply({k: v for k, v in payload.items() if v is not None}, kw)

    def cb(self, acct: str | None = None, ccy: str | None = None, amount: float | None = None,
           value_date: str | None = None, **kw: Any) -> tuple[str, dict[str, Any]]:
        rng = self.rng

        def key() -> tuple[Any, ...]:
            c = self.ccy()
            return (f"NOSTRO-{c}-{rng.randrange(10, 999):03d}", c, self.trade_date(rng.randrange(5)))

        if acct is None or ccy is None:
            acct, ccy, vd = self.unique("CASH_BREAK", key)
        else:
            vd = value_date or self.trade_date(1)
            self.claim("CASH_BREAK", (acct, ccy, vd))
        if amount is None:
            r = rng.random()
            if r < 0.45:
                amount = rng.uniform(0.01, 999.99)  # fees, accrual rounding, FX rounding
            elif r < 0.9:
                amount = self.lognorm(40_000, 1.3, 1_000, 999_999)
            else:
                amount = self.lognorm(2_000_000, 0.8, 1_000_000, 60_000_000)
            amount = self.money(amount * rng.choice((-1, 1)))
        ledger = self.money(self.lognorm(25_000_000, 1.2, 100_000, 900_000_000))
        payload = {
            "accountId": acct, "currency": ccy, "valueDate": vd, "ledgerBalance": ledger,
            "statementBalance": self.money(ledger - amount), "breakAmount": amount, "bank": _CASH_BANKS[ccy],
            "statementRef": f"{'MT940' if rng.random() < 0.6 else 'CAMT053'}-{rng.randrange(10**7, 10**8)}",
            "cashType": rng.choice(("TRADE", "FEE", "INCOME", "FX", "MARGIN")),
        }
        return rng.choice(("nostro-recon", "nostro-recon", "treasury")), self._apply(payload, kw)

    def rr(self, **kw: Any) -> tuple[str, dict[str, Any]]:
        rng = self.rng
        regime = kw.get("regime") or rng.choices(("CAT", "MIFIR", "EMIR", "SFTR"), (0.6, 0.25, 0.1, 0.05))[0]
        cusip = self.security()[0]
        payload = {
            "reportId": f"{regime}-20250314-{self.seq('report', 600000)}", "orderId": self.order_id(),
            "regime": regime, "rejectReason": rng.choice(_REJECTS[regime]),
            "rejectCode": f"{rng.randrange(1000, 9999)}", "hoursToDeadline": round(rng.uniform(0.5, 70), 1),
            "isin": isin_from_cusip(cusip),
        }
        if regime == "CAT":
            payload["cusip"] = cusip
        src = {"CAT": "cat-gateway", "MIFIR": "arm-gateway", "EMIR": "emir-tr", "SFTR": "emir-tr"}[regime]
        return src, self._apply(payload, kw)

    def sm(self, cusip: str | None = None, attr: str | None = None, **kw: Any) -> tuple[str, dict[str, Any]]:
        rng = self.rng

        def key() -> tuple[Any, ...]:
            c, _name, _price, kind = self.security()
            pool = _SECM_ATTRS if kind != "EQUITY" else [a for a in _SECM_ATTRS if a[1] == "STATIC"]
            return (c, pool[rng.randrange(len(pool))][0])

        if cusip is None or attr is None:
            cusip, attr = self.unique("SEC_MASTER_MISMATCH", key)
        else:
            self.claim("SEC_MASTER_MISMATCH", (cusip, attr))
        impact = dict(_SECM_ATTRS).get(attr, "STATIC")
        coupon = rng.choice((1.625, 2.4, 3.35, 4.25, 5.1))
        mat = date(rng.randrange(2027, 2055), rng.choice((2, 5, 8, 11)), 15)
        golden, vendor = {
            "issuerName": ("Apple Inc.", "APPLE INC"), "sector": ("Information Technology", "Technology"),
            "countryOfRisk": ("US", "IE"), "exchangeCode": ("XNAS", "XNGS"), "coupon": (coupon, coupon + 0.125),
            "maturity": (mat.isoformat(), (mat + timedelta(days=15)).isoformat()), "dayCount": ("30/360", "ACT/360"),
            "couponFrequency": ("SEMI_ANNUAL", "ANNUAL"),
        }.get(attr, ("A", "B"))
        payload = {
            "cusip": cusip, "isin": isin_from_cusip(cusip) if len(cusip) == 9 else None, "attribute": attr,
            "goldenValue": golden, "vendorValue": vendor, "vendor": rng.choice(("Bloomberg", "Refinitiv", "ICE Data")),
            "impact": impact, "positionCount": rng.choice((0, 0, 1, 3, 12, 40)) if impact == "ECONOMIC" else rng.randrange(0, 60),
        }
        return "refdata-hub", self._apply({k: v for k, v in payload.items() if v is not None}, kw)

    def make(self, etype: str) -> tuple[str, dict[str, Any]]:
        if etype == "TRADE_LIFECYCLE":
            return "oms", {"orderId": self.order_id(), "note": self.rng.choice(
                ("order amended after execution", "late trade booked after cut-off", "cancel/correct received"))}
        if etype == "RECONCILIATION_BREAK":
            return "recon-engine", {"accountId": f"HOUSE-{self.rng.randrange(10000, 99999)}",
                                    "note": "break notice without detail", "breakCount": self.rng.randrange(2, 40)}
        return {"TRADE_MISMATCH": self.tm, "FAILED_ALLOCATION": self.fa, "SETTLEMENT_FAIL": self.sf,
                "POSITION_BREAK": self.pb, "CASH_BREAK": self.cb, "REG_REPORT_REJECTED": self.rr,
                "SEC_MASTER_MISMATCH": self.sm}[etype]()

    def unknown(self) -> tuple[str | None, str, dict[str, Any]]:
        rng = self.rng
        choice = rng.randrange(3)
        if choice == 0:
            return "FX_RATE_STALE", "market-data", {"currencyPair": rng.choice(("EURUSD", "USDJPY", "GBPUSD")),
                                                    "staleSeconds": rng.randrange(120, 3600)}
        if choice == 1:
            return "CORPORATE_ACTION_MISSED", "ca-platform", {
                "caEventId": f"CA-{self.seq('ca', 90000)}", "eventType": rng.choice(("DVCA", "SPLF", "MRGR")),
                "securityName": self.security()[1]}
        return None, "ops-monitor", {"message": "batch job overran its window", "jobName": f"EOD-{rng.randrange(10, 99)}",
                                     "minutesLate": rng.randrange(5, 90)}

    # ---------------------------------------------------------------------------------- scenarios

    def scenarios(self) -> list[list[Line]]:
        E = self.envelope
        g: list[list[Line]] = []

        def one(etype: str | None, sp: tuple[str, dict[str, Any]], **kw: Any) -> dict[str, Any]:
            line = E(etype, sp[0], sp[1], **kw)
            g.append([line])
            return line

        # ---- TRADE_MISMATCH: side rule, 10m threshold, missing fields, detection
        one("TRADE_MISMATCH", self.tm(notional=2_400_000.00, mismatchFields=["price"]))
        one("TRADE_MISMATCH", self.tm(notional=1_050_000.00, mismatchFields=["side", "price"]), ts="Z")
        one("TRADE_MISMATCH", self.tm(notional=10_000_000, mismatchFields=["quantity"]))            # at 10m: HIGH
        one("TRADE_MISMATCH", self.tm(notional=9_999_999.99, mismatchFields=["quantity"]))          # below: MEDIUM
        one("TRADE_MISMATCH", self.tm(notional=10_000_000.0, mismatchFields=["price"]), ts="epoch_ms")
        one("TRADE_MISMATCH", self.tm(notional="12500000.00", mismatchFields=["price"]))             # amount as text
        tm_min = self.tm()
        one("TRADE_MISMATCH", (tm_min[0], {"orderId": tm_min[1]["orderId"], "execId": tm_min[1]["execId"]}))
        one(None, self.tm(notional=3_150_000.00, mismatchFields=["quantity"]))                      # detected
        one("TRADE_MISMATCH", self.tm(orderId=None, mismatchFields=["price"]))                      # no orderId
        one("trade_mismatch", self.tm(notional=640_000.00, mismatchFields=["price"]))               # wrong case

        # ---- FAILED_ALLOCATION: cut-off (ageDays 1/0), 50m block, FUND override, weak/strong detection
        one("FAILED_ALLOCATION", self.fa(accountType="SMA", accountId="SMA-20417", notional=5_000_000.00, ageDays=0))
        one("FAILED_ALLOCATION", self.fa(accountType="SMA", accountId="SMA-20418", notional=5_000_000.00, ageDays=1))
        one("FAILED_ALLOCATION", self.fa(accountType="SMA", accountId="SMA-31002", notional=50_000_000, ageDays=0))
        one("FAILED_ALLOCATION", self.fa(accountType="SMA", accountId="SMA-31003", notional=49_999_999.99, ageDays=0))
        one("FAILED_ALLOCATION", self.fa(accountType="FUND", accountId="FUND-GROWTH", notional=7_300_000.00, ageDays=0))
        one("FAILED_ALLOCATION", self.fa(accountType="FUND", accountId="FUND-INCOME", notional=64_000_000.00, ageDays=2))
        fa_weak = self.fa()[1]
        one(None, ("oms", {"orderId": fa_weak["orderId"], "allocId": fa_weak["allocId"], "unallocatedQty": 2500}),
            ts="epoch_s")                                                                           # 0.75 x 0.9
        fa_weak2 = self.fa()[1]
        one(None, ("oms", {"orderId": fa_weak2["orderId"], "allocId": fa_weak2["allocId"], "unallocatedQty": 1200,
                           "ageDays": 1}))                                                          # 0.75 x 1.0
        fa_strong = self.fa()[1]
        one(None, ("ctm-gateway", {"orderId": fa_strong["orderId"], "allocId": fa_strong["allocId"],
                                   "allocStatus": "REJECTED", "ageDays": 1, "accountId": "SMA-77120"}))

        # ---- SETTLEMENT_FAIL: aged (4/3), watchlist, small-fresh (<100k & <2d), Northwind INTERNAL overrides
        one("SETTLEMENT_FAIL", self.sf(notional=2_000_000.00, ageDays=1, counterpartyTier="TIER_2",
                                       counterparty="Barclays Capital Inc.", failReason="INSUFFICIENT_SECURITIES"))
        one("SETTLEMENT_FAIL", self.sf(notional=2_000_000.00, ageDays=1, counterpartyTier="TIER_2",
                                       counterparty="UBS Securities LLC", failReason="LATE_AFFIRMATION"))
        one("SETTLEMENT_FAIL", self.sf(notional=880_000.00, ageDays=4, counterpartyTier="TIER_1", failReason="SSI_MISMATCH"))
        one("SETTLEMENT_FAIL", self.sf(notional=880_000.00, ageDays=3, counterpartyTier="TIER_1", failReason="SSI_MISMATCH"))
        one("SETTLEMENT_FAIL", self.sf(notional=430_000.00, ageDays=0, counterparty="Stonehaven Prime Brokerage LLC",
                                       counterpartyTier="WATCHLIST", failReason="LATE_MATCHING"), ts="+02:00")
        one("SETTLEMENT_FAIL", self.sf(notional=430_000.00, ageDays=0, counterparty="Cantor Fitzgerald & Co.",
                                       counterpartyTier="TIER_3", failReason="INSUFFICIENT_SECURITIES"))
        one("SETTLEMENT_FAIL", self.sf(notional=99_999.00, ageDays=1, counterpartyTier="TIER_1", failReason="LATE_AFFIRMATION"))
        one("SETTLEMENT_FAIL", self.sf(notional=100_000.00, ageDays=1, counterpartyTier="TIER_1", failReason="INSUFFICIENT_CASH"))
        one("SETTLEMENT_FAIL", self.sf(notional=50_000.00, ageDays=2, counterpartyTier="TIER_1", failReason="INSUFFICIENT_SECURITIES"))
        internal = {"counterparty": "Northwind Securities International Ltd", "counterpartyTier": "INTERNAL"}
        one("SETTLEMENT_FAIL", self.sf(notional=2_000_000.00, ageDays=4, failReason="INSUFFICIENT_SECURITIES", **internal))
        one("SETTLEMENT_FAIL", self.sf(notional=2_000_000.00, ageDays=5, failReason="INSUFFICIENT_SECURITIES", **internal))
        one("SETTLEMENT_FAIL", self.sf(notional=2_000_000.00, ageDays=6, failReason="LATE_MATCHING", **internal), ts="-04:00")
        one("SETTLEMENT_FAIL", self.sf(notional=75_000.00, ageDays=0, failReason="CSD_TECHNICAL", **internal))
        sf_stat = self.sf()[1]
        one(None, ("custody-feed", {"settleId": sf_stat["settleId"], "orderId": sf_stat["orderId"], "status": "FAILED",
                                    "ageDays": 2, "notional": 640_000.00}))                         # 0.8 x 0.9 = 0.72
        sf_stat2 = self.sf()[1]
        one(None, ("custody-feed", {"settleId": sf_stat2["settleId"], "orderId": sf_stat2["orderId"], "status": "FAILED",
                                    "ageDays": 6}), ts="date")                                      # 0.8 x 1.0
        one("SETTLEMENT_FAILURE", self.sf(notional=2_000_000.00, ageDays=0, failReason="CSD_TECHNICAL"))  # misspelled
        sf_noid = self.sf(failReason="SSI_MISMATCH", ageDays=1)
        one("SETTLEMENT_FAIL", (sf_noid[0], {k: v for k, v in sf_noid[1].items() if k != "settleId"}))  # no settleId

        # ---- POSITION_BREAK: 1m/5m either sign, aged (5/4), Northwind CUSTOMER override, bad CUSIP
        def pbk(acct: str, cusip: str, value: float, age: int, **kw: Any) -> tuple[str, dict[str, Any]]:
            return self.pb(acct, cusip, value, ageDays=age, **kw)

        pb_house = one("POSITION_BREAK", pbk("HOUSE-EQ-01", "037833100", 200_000.00, 1))
        one("POSITION_BREAK", pbk("FUND-GROWTH", "594918104", 1_000_000.00, 0))
        one("POSITION_BREAK", pbk("FUND-GROWTH", "023135106", 999_999.99, 0))
        one("POSITION_BREAK", pbk("FUND-INCOME", "912828YK0", -1_000_000.00, 0))
        one("POSITION_BREAK", pbk("FUND-INCOME", "084670702", -999_999.99, 0))
        one("POSITION_BREAK", pbk("FUND-INCOME", "67066G104", 5_000_000, 0))
        one("POSITION_BREAK", pbk("FUND-BALANCED", "30303M102", 4_999_999.00, 0))
        one("POSITION_BREAK", pbk("FUND-SMALLCAP", "88160R101", -5_000_000.00, 1))
        one("POSITION_BREAK", pbk("FUND-SMALLCAP", "594918104", -4_999_999.99, 1))
        one("POSITION_BREAK", pbk("HOUSE-EQ-02", "46625H100", 10_000.00, 5))
        one("POSITION_BREAK", pbk("HOUSE-EQ-02", "478160104", 10_000.00, 4))
        one("POSITION_BREAK", pbk("CUST-55012", "037833100", 2_134.90, 0))
        one("POSITION_BREAK", pbk("CUST-55013", "931142103", 1_200_000.00, 2))
        one(None, pbk("FUND-TREASURY", "191216100", 42_000.00, 1))                              # detected
        one("POSITION_BREAK", pbk("FUND-INTL-EQ", "37833100", 64_000.00, 0))  # leading zero lost in a spreadsheet

        # ---- CASH_BREAK: 1,000 and 1m thresholds either sign, Acme non-USD/EUR/GBP override, weak detection
        def cbk(acct: str, ccy: str, amount: float, **kw: Any) -> tuple[str, dict[str, Any]]:
            return self.cb(acct, ccy, amount, **kw)

        one("CASH_BREAK", cbk("NOSTRO-USD-1", "USD", 25_000.00))
        one("CASH_BREAK", cbk("NOSTRO-USD-2", "USD", 999.99))
        one("CASH_BREAK", cbk("NOSTRO-USD-3", "USD", 1_000.00))
        one("CASH_BREAK", cbk("NOSTRO-EUR-1", "EUR", -999.99), ts="+01:00")
        one("CASH_BREAK", cbk("NOSTRO-EUR-2", "EUR", -1_000.00))
        one("CASH_BREAK", cbk("NOSTRO-GBP-1", "GBP", 1_000_000.00))
        one("CASH_BREAK", cbk("NOSTRO-USD-4", "USD", -1_000_000.00))
        one("CASH_BREAK", cbk("NOSTRO-USD-5", "USD", 999_999.99))
        one("CASH_BREAK", cbk("NOSTRO-USD-6", "USD", -999_999.99))
        one("CASH_BREAK", cbk("NOSTRO-BRL-1", "BRL", 25_000.00))
        one("CASH_BREAK", cbk("NOSTRO-JPY-1", "JPY", 500.00))
        one("CASH_BREAK", cbk("NOSTRO-MXN-1", "MXN", -2_500_000.00))
        one(None, ("treasury", {"accountId": "NOSTRO-USD-7", "currency": "USD", "ledgerBalance": 1_050_000.00,
                                "statementBalance": 1_045_000.00, "valueDate": self.trade_date(0)}))  # 0.6 x 0.9
        one(None, ("treasury", {"currency": "CAD", "ledgerBalance": 310_400.00, "statementBalance": 309_150.00,
                                "breakAmount": 1_250.00, "valueDate": self.trade_date(0)}))        # no accountId
        cash_bare = one(None, cbk("NOSTRO-EUR-3", "EUR", 48_210.55), bare=True, key="none")        # bare, detected

        # ---- REG_REPORT_REJECTED: 4h and 24h thresholds, untyped 250m rule, Acme override (every one CRITICAL)
        one("REG_REPORT_REJECTED", self.rr(regime="CAT", rejectReason="INVALID_CUSTOMER_ID", hoursToDeadline=12))
        one("REG_REPORT_REJECTED", self.rr(regime="CAT", rejectReason="MISSING_FDID", hoursToDeadline=3.9), ts="epoch_s_str")
        one("REG_REPORT_REJECTED", self.rr(regime="CAT", rejectReason="MISSING_FDID", hoursToDeadline=4))
        one("REG_REPORT_REJECTED", self.rr(regime="MIFIR", rejectReason="LEI_LAPSED", hoursToDeadline=24))
        one("REG_REPORT_REJECTED", self.rr(regime="MIFIR", rejectReason="LEI_LAPSED", hoursToDeadline=23.5))
        one("REG_REPORT_REJECTED", self.rr(regime="MIFIR", rejectReason="INVALID_ISIN", hoursToDeadline=48,
                                           notional=250_000_000))
        one("REG_REPORT_REJECTED", self.rr(regime="MIFIR", rejectReason="INVALID_ISIN", hoursToDeadline=48,
                                           notional=249_999_999.99))
        one(None, self.rr(regime="EMIR", rejectReason="UTI_MISSING", hoursToDeadline=30), ts="naive")  # detected

        # ---- SEC_MASTER_MISMATCH: static (sync / unapproved), economic held (positionCount 1/0), detection
        for cusip, attr, extra in (("037833100", "issuerName", {}), ("912828YK0", "coupon", {"positionCount": 12}),
                                   ("912828YK0", "maturity", {"positionCount": 0}),
                                   ("084670702", "dayCount", {"positionCount": 1})):
            one("SEC_MASTER_MISMATCH", self.sm(cusip, attr, **extra))
        one(None, self.sm("594918104", "sector", positionCount=22), ts="space")       # 0.85 x 0.9

        # ---- parents, unknown types, odd envelopes
        one("TRADE_LIFECYCLE", ("oms", {"orderId": self.order_id(), "note": "order amended after execution"}))
        one("RECONCILIATION_BREAK", ("recon-engine", {"accountId": "HOUSE-FI-03", "note": "generic break notice"}))
        one("FX_RATE_STALE", ("market-data", {"currencyPair": "EURUSD", "staleSeconds": 900}))
        one("CORPORATE_ACTION_MISSED", pbk("FUND-BALANCED", "742718109", 88_400.00, 1))          # unknown type, detectable
        one(None, ("ops-monitor", {"message": "EOD position file arrived late", "jobName": "EOD-POS-02", "minutesLate": 47}))
        one(None, ("ops-monitor", {"message": "something went wrong", "code": 17}), bare=True)
        one(42, self.tm(notional=880_000.00, mismatchFields=["commission"]))                           # type not a string
        one("POSITION_BREAK", pbk("HOUSE-FI-04", "912828YK0", 151_200.00, 2))
        g[-1][0].pop("sourceSystem")                                                                    # no sourceSystem
        one("CASH_BREAK", cbk("NOSTRO-CHF-1", "CHF", 7_420.10), ts="bad")                              # unparseable time
        one("SETTLEMENT_FAIL", self.sf(ageDays=1, failReason="INSUFFICIENT_SECURITIES"), ts="none")   # no time at all
        one("TRADE_MISMATCH", self.tm(notional=1_230_000.00, mismatchFields=["price"]), ts="z")
        one("SETTLEMENT_FAIL", self.sf(ageDays=0, failReason="LATE_MATCHING"), ts="epoch_float", ts_in_payload=True)
        one("CASH_BREAK", cbk("NOSTRO-USD-8", "USD", -320.75), ts="Zms", ts_in_payload=True)

        # ---- id generation: no exceptionId (Breakdesk assigns one)
        one(None, self.sf(ageDays=1, failReason="SSI_MISMATCH"), bare=True, eid=False, key="event")
        noid_idem = one("REG_REPORT_REJECTED", self.rr(regime="CAT", hoursToDeadline=40), eid=False, key="idem")
        one("CASH_BREAK", cbk("NOSTRO-GBP-2", "GBP", 4_410.00), eid=False, key="none")

        # ---- duplicates
        d_idem = E("TRADE_MISMATCH", *self.tm(notional=5_600_000.00, mismatchFields=["quantity"]), key="idem")
        g.append([d_idem, self.resend(d_idem)])                                          # exact resend
        d_retry = E("FAILED_ALLOCATION", *self.fa(ageDays=0, accountType="SMA", accountId="SMA-40117"), key="idem")
        g.append([d_retry, self.retry_same_key(d_retry)])                                # same key, new id
        d_src = E("SETTLEMENT_FAIL", *self.sf(ageDays=1, failReason="LATE_AFFIRMATION"), key="source")
        g.append([d_src, {**d_src, "exceptionId": _Id(), "timestamp": _Ts()}])          # same sourceSystem+sourceId
        d_evt = E("CASH_BREAK", *cbk("NOSTRO-USD-9", "USD", 12_500.00), key="event")
        g.append([d_evt, {**d_evt, "exceptionId": _Id()}])                               # same payload eventId
        d_eid = E("POSITION_BREAK", *pbk("CUST-61870", "717081103", 5_192.00, 1), key="none")
        g.append([d_eid, {**d_eid, "rawPayload": {**d_eid["rawPayload"], "breakQty": 210, "breakValue": 5_451.60}}])
        self.after(g, noid_idem, {**noid_idem, "timestamp": _Ts()})                   # id-less resend, same key

        # ---- recurrences (open exceptions): same fingerprint, new event
        r_sf = E("SETTLEMENT_FAIL", *self.sf(ageDays=1, notional=1_840_000.00, failReason="INSUFFICIENT_SECURITIES",
                                              counterpartyTier="TIER_2", counterparty="Jefferies LLC"), key="event")
        g.append([r_sf, self.recur(r_sf, ageDays=2), self.recur(r_sf, ageDays=3), self.recur(r_sf, ageDays=4)])
        self.after(g, pb_house, self.recur(pb_house, breakQty=1004, breakValue=214_344.00, ageDays=2))
        r_det = E("POSITION_BREAK", *pbk("FUND-TREASURY", "30231G102", 66_300.00, 0), key="idem")
        g.append([r_det, self.recur(r_det, key="event", send_type=None, source="recon-engine-eod", ageDays=1)])
        r_cash = E("CASH_BREAK", *cbk("NOSTRO-EUR-4", "EUR", 3_305.20), key="event")
        twin = {**r_cash, "exceptionId": _Id(), "sourceSystem": "treasury", "timestamp": _Ts()}
        g.append([r_cash, twin])                      # same eventId from another system: not a duplicate, a recurrence
        self.after(g, cash_bare, self.recur(cash_bare, key="none"))  # bare, no keys: recurs on fingerprint only

        # ---- bad lines
        g.extend([b] for b in self.bad_lines(d_idem))
        return g


# ============================================================================================ healthcare

_PAYERS: tuple[tuple[str, str, str, float], ...] = (
    # payerId, name, payer type, share
    ("BCBS-IL", "Blue Cross Blue Shield of Illinois", "COMMERCIAL", 0.18),
    ("AETNA-60054", "Aetna", "COMMERCIAL", 0.10),
    ("UHC-87726", "UnitedHealthcare", "COMMERCIAL", 0.14),
    ("CIGNA-62308", "Cigna Healthcare", "COMMERCIAL", 0.07),
    ("HUMANA-61101", "Humana Medicare Advantage", "MEDICARE", 0.06),
    ("MCR-J15B", "Medicare Part B (CGS J15)", "MEDICARE", 0.16),
    ("MCD-OH", "Ohio Department of Medicaid", "MEDICAID", 0.08),
    ("MCD-IL", "Illinois HFS Medicaid", "MEDICAID", 0.07),
    ("CARESOURCE-31114", "CareSource Medicaid", "MEDICAID", 0.05),
    ("AMBETTER-68069", "Ambetter (Marketplace)", "MARKETPLACE", 0.06),
    ("OSCAR-OSCAR", "Oscar Health (Marketplace)", "MARKETPLACE", 0.03),
)
# (CPT, typical charge, ICD-10 codes that support it, care setting)
_PROCEDURES: tuple[tuple[str, float, tuple[str, ...], str], ...] = (
    ("99213", 145.0, ("I10", "E11.9", "J06.9", "E78.5"), "OUTPATIENT"),
    ("99214", 220.0, ("E11.65", "I10", "M54.50", "F41.1"), "OUTPATIENT"),
    ("99215", 310.0, ("I50.9", "N18.30", "E11.65"), "OUTPATIENT"),
    ("99285", 1_850.0, ("R07.9", "S06.0X0A", "R10.9"), "ED"),
    ("99284", 1_240.0, ("R07.89", "S52.501A", "R55"), "ED"),
    ("99442", 95.0, ("F32.A", "F41.1", "J06.9"), "TELEHEALTH"),
    ("90837", 240.0, ("F33.1", "F43.10", "F41.1"), "TELEHEALTH"),
    ("72148", 1_650.0, ("M54.16", "M51.26"), "OUTPATIENT"),
    ("70553", 3_100.0, ("G43.909", "R51.9", "G35"), "OUTPATIENT"),
    ("93306", 1_900.0, ("I48.91", "I50.9", "R01.1"), "OUTPATIENT"),
    ("45378", 2_450.0, ("Z12.11", "K57.30"), "OUTPATIENT"),
    ("29881", 9_800.0, ("S83.241A", "M23.221"), "OUTPATIENT"),
    ("27447", 48_000.0, ("M17.11", "M17.12"), "INPATIENT"),
    ("63030", 31_000.0, ("M51.16", "M48.061"), "INPATIENT"),
    ("33533", 96_000.0, ("I25.10", "I21.4"), "INPATIENT"),
    ("36415", 18.0, ("Z00.00", "E78.5"), "OUTPATIENT"),
    ("80053", 62.0, ("Z00.00", "E11.9"), "OUTPATIENT"),
    ("97110", 120.0, ("M62.81", "S83.241D"), "OUTPATIENT"),
)
# (NDC 5-4-2, drug, therapeutic class, high-alert per ISMP)
_DRUGS: tuple[tuple[str, str, str, bool], ...] = (
    ("00056-0172-70", "warfarin 5 mg tablet", "ANTICOAGULANT", True),
    ("00003-0894-21", "apixaban 5 mg tablet", "ANTICOAGULANT", True),
    ("00075-0624-40", "enoxaparin 40 mg/0.4 mL syringe", "ANTICOAGULANT", True),
    ("00088-2220-33", "insulin glargine 100 units/mL pen", "INSULIN", True),
    ("00002-7510-01", "insulin lispro 100 units/mL vial", "INSULIN", True),
    ("00406-0552-01", "oxycodone 5 mg tablet", "OPIOID", True),
    ("00409-1283-31", "hydromorphone 2 mg/mL injection", "OPIOID", True),
    ("00093-7180-01", "sertraline 50 mg tablet", "SSRI", False),
    ("00093-5851-01", "escitalopram 10 mg tablet", "SSRI", False),
    ("00093-0058-01", "omeprazole 20 mg capsule", "PPI", False),
    ("00093-5057-01", "atorvastatin 40 mg tablet", "STATIN", False),
    ("00093-1111-01", "lisinopril 10 mg tablet", "ACE_INHIBITOR", False),
    ("00591-5307-01", "amoxicillin 500 mg capsule", "PENICILLIN", False),
)
#: Procedures payers commonly put under prior authorization (imaging, surgery, therapy; ED visits are exempt,
#: which is why an authorization denial on an ED claim is appealed rather than fixed).
_AUTH_CPTS = ("72148", "70553", "93306", "45378", "29881", "97110", "90837", "27447", "63030", "33533", "99285", "99284")
_HC_TS_FIELD = "occurredAt"


class HealthcareGen(_Base):
    domain = "healthcare"
    id_prefix = "HC"
    ts_field = _HC_TS_FIELD
    weights = (("CLAIM_MISSING_PRIOR_AUTH", 0.22), ("CLAIM_CODE_MISMATCH", 0.22), ("ELIGIBILITY_COVERAGE_LAPSE", 0.2),
               ("PROVIDER_CREDENTIAL_EXPIRED", 0.1), ("PATIENT_DEMOGRAPHIC_CONFLICT", 0.12),
               ("PHARMACY_DUPLICATE_THERAPY", 0.12), ("CLAIMS_INTEGRITY", 0.01), ("MASTER_DATA", 0.005),
               ("PATIENT_SAFETY", 0.005))

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        self._payer_w = tuple(p[3] for p in _PAYERS)
        self._payers_by_type: dict[str, list[tuple[str, str, str, float]]] = {}
        for p in _PAYERS:
            self._payers_by_type.setdefault(p[2], []).append(p)
        self._proc_pools: dict[tuple[str | None, tuple[str, ...] | None], list[Any]] = {}
        self._npis = [_npi(f"1{rng.randrange(10**7, 10**8)}") for _ in range(600)]

    def mrn(self) -> str:
        return f"MRN-{self.seq('mrn', 4_103_000)}"

    def claim_id(self) -> str:
        return f"CLM-25{self.seq('claim', 7_300_000):08d}"

    def payer(self, kind: str | None = None) -> tuple[str, str, str, float]:
        if kind is None:
            return self.rng.choices(_PAYERS, self._payer_w)[0]
        return self.rng.choice(self._payers_by_type[kind])

    def member_id(self, payer_type: str) -> str:
        rng = self.rng
        if payer_type == "MEDICARE":
            return _mbi(rng)
        if payer_type == "MEDICAID":
            return f"{rng.randrange(10**9, 10**10)}{rng.randrange(10, 99)}"
        return f"{rng.choice(('XEH', 'ZGP', 'W', 'U', 'H'))}{rng.randrange(10**8, 10**9)}"

    def npi(self) -> str:
        """One of the organization's practitioners (a fixed roster, as in a real provider directory)."""
        return self.rng.choice(self._npis)

    def service_date(self, back: int | None = None) -> str:
        days = back if back is not None else int(self.lognorm(24, 0.9, 1, 300))
        return (BASE_DATE - timedelta(days=days)).isoformat()

    def procedures(self, setting: str | None = None, cpts: tuple[str, ...] | None = None) -> list[Any]:
        key = (setting, cpts)
        pool = self._proc_pools.get(key)
        if pool is None:
            pool = self._proc_pools[key] = [
                p for p in _PROCEDURES if (setting is None or p[3] == setting) and (cpts is None or p[0] in cpts)]
        return pool

    def _claim(self, carc: str, setting: str | None = None, payer_type: str | None = None,
               cpts: tuple[str, ...] | None = None, billed: float | None = None) -> dict[str, Any]:
        """A denied claim. With `billed`, the procedure is the one whose usual charge is closest to it."""
        rng = self.rng
        pool = self.procedures(setting, cpts)
        if billed is None:
            cpt, charge, dx, care = pool[rng.randrange(len(pool))]
            units = rng.randrange(1, 4) if care == "OUTPATIENT" and charge < 300 else 1
            billed = self.money(charge * rng.uniform(0.85, 1.6) * units)
        else:
            cpt, charge, dx, care = min(pool, key=lambda p: abs(math.log(max(billed, 1.0) / p[1])))
        payer_id, payer_name, ptype, _ = self.payer(payer_type)
        codes = [cpt] + ([rng.choice(("36415", "80053", "85025"))] if rng.random() < 0.25 and care != "INPATIENT" else [])
        return {
            "claimId": self.claim_id(), "patientId": self.mrn(), "memberId": self.member_id(ptype), "payerId": payer_id,
            "payerName": payer_name, "payerType": ptype, "npi": self.npi(), "procedureCodes": codes,
            "diagnosisCodes": list(dx[: rng.randrange(1, len(dx) + 1)]), "billedAmount": billed,
            "serviceDate": self.service_date(), "careSetting": care, "carc": carc,
            "claimFrequency": "1", "placeOfService": {"OUTPATIENT": "22", "ED": "23", "INPATIENT": "21", "TELEHEALTH": "10"}[care],
        }

    def auth(self, setting: str | None = None, billed: float | None = None, **kw: Any) -> tuple[str, dict[str, Any]]:
        rng = self.rng
        setting = setting or rng.choices(("OUTPATIENT", "INPATIENT", "ED"), (0.7, 0.18, 0.12))[0]
        c = self._claim(kw.pop("carc", None) or rng.choice(("197", "197", "197", "15")), setting, cpts=_AUTH_CPTS,
                        billed=billed)
        c["daysToFilingDeadline"] = rng.randrange(2, 330)
        c["rarc"] = rng.choice(("N54", "M62", "N517", "MA92"))
        return rng.choice(("remit-835", "remit-835", "claims-scrubber")), self._apply(c, kw)

    def coding(self, billed: float | None = None, payer_type: str | None = None, **kw: Any) -> tuple[str, dict[str, Any]]:
        rng = self.rng
        c = self._claim(kw.pop("carc", None) or rng.choice(("11", "11", "4")), payer_type=payer_type, billed=billed)
        if c["carc"] == "4":
            c["modifiers"] = [rng.choice(("25", "59", "26", "TC", "LT", "RT"))]
        c["diagnosisCodes"] = [rng.choice(("Z00.00", "Z23", "R69", "Z71.89"))]  # unspecific: why it was denied
        return "remit-835", self._apply(c, kw)

    def elig(self, **kw: Any) -> tuple[str, dict[str, Any]]:
        rng = self.rng
        ptype = rng.choices(("COMMERCIAL", "MEDICAID", "MARKETPLACE", "MEDICARE"), (0.4, 0.3, 0.2, 0.1))[0]
        if rng.random() < 0.6:  # from the remittance: a claim exists
            c = self._claim(rng.choice(("27", "27", "26")), payer_type=ptype)
            src = "remit-835"
        else:  # from a real-time eligibility check or an admission: no claim yet
            payer_id, payer_name, _, _ = self.payer(ptype)
            care = rng.choices(("OUTPATIENT", "INPATIENT", "ED"), (0.6, 0.25, 0.15))[0]
            c = {"patientId": self.mrn(), "memberId": self.member_id(ptype), "payerId": payer_id, "payerName": payer_name,
                 "payerType": ptype, "careSetting": care, "serviceDate": self.service_date(rng.randrange(0, 4)),
                 "coverageStatus": "INACTIVE", "aaaRejectCode": rng.choice(("72", "75", "76"))}
            src = "adt" if care == "INPATIENT" else "eligibility-270"
        if ptype == "MARKETPLACE":
            c["inGracePeriod"] = rng.random() < 0.6
        self.claim("ELIGIBILITY_COVERAGE_LAPSE", (c["memberId"], c["serviceDate"]))
        return src, self._apply(c, kw)

    def cred(self, **kw: Any) -> tuple[str, dict[str, Any]]:
        rng = self.rng
        ctype = rng.choices(("STATE_LICENSE", "DEA", "BOARD_CERTIFICATION", "MALPRACTICE_INSURANCE"),
                            (0.35, 0.15, 0.3, 0.2))[0]
        days = int(self.lognorm(9, 1.2, 1, 120))
        p: dict[str, Any] = {
            "providerId": f"PRV-{self.seq('provider', 20400)}", "npi": self.npi(), "credentialType": ctype,
            "credentialStatus": "EXPIRED", "credentialExpiryDate": (BASE_DATE - timedelta(days=days)).isoformat(),
            "daysSinceExpiry": days, "upcomingAppointments": rng.choice((0, 0, 0, 2, 6, 14, 31)),
            "specialty": rng.choice(("Family Medicine", "Internal Medicine", "Psychiatry", "Cardiology",
                                     "Orthopaedic Surgery", "Emergency Medicine", "Pediatrics")),
        }
        if ctype == "STATE_LICENSE":
            p["licenseState"] = rng.choice(("IL", "OH", "IN", "WI", "MI", "TX", "FL"))
            p["licenseNumber"] = f"{rng.randrange(36, 37)}{rng.randrange(10**5, 10**6):06d}"
        elif ctype == "DEA":
            p["deaNumber"] = _dea(rng)
        elif ctype == "BOARD_CERTIFICATION":
            p["board"] = rng.choice(("ABIM", "ABFM", "ABPN", "ABOS", "ABP"))
        else:
            p["carrier"] = rng.choice(("ProAssurance", "The Doctors Company", "MedPro Group", "Coverys"))
        return rng.choice(("credentialing", "credentialing", "caqh-proview")), self._apply(p, kw)

    def demo(self, **kw: Any) -> tuple[str, dict[str, Any]]:
        rng = self.rng
        fields = rng.choice((["address"], ["phone"], ["address", "phone"], ["lastName"], ["memberId"],
                             ["sex"], ["dateOfBirth"], ["ssnLast4"], ["dateOfBirth", "address"]))
        p = {"patientId": self.mrn(), "duplicatePatientId": f"MRN-{self.seq('mrn2', 9_100_000)}",
             "conflictFields": fields, "affectsBilling": "memberId" in fields or rng.random() < 0.2,
             "matchScore": round(rng.uniform(0.62, 0.99), 2), "facility": rng.choice(("Main Campus", "North Clinic", "ED", "Outside Lab"))}
        return rng.choice(("empi", "empi", "registration")), self._apply(p, kw)

    def rx(self, **kw: Any) -> tuple[str, dict[str, Any]]:
        rng = self.rng
        ndc, name, klass, high = _DRUGS[rng.randrange(len(_DRUGS))]
        age = int(rng.triangular(1, 96, 67))
        oid = self.seq("rxorder", 55_200_000)
        p = {"orderId": f"RX-{oid}", "duplicateOf": f"RX-{oid - rng.randrange(40, 9000)}", "patientId": self.mrn(),
             "ndc": ndc, "drugName": name, "therapeuticClass": klass, "isHighAlert": high,
             "plannedTransition": (not high) and rng.random() < 0.25, "patientAgeYears": age,
             "route": rng.choice(("PO", "PO", "IV", "SC")), "prescriberNpi": self.npi(),
             "unit": rng.choice(("4 West", "ICU", "Pediatrics", "ED", "Oncology", "Outpatient Pharmacy"))}
        return rng.choice(("pharmacy-cds", "pharmacy-cds", "epic-willow")), self._apply(p, kw)

    def make(self, etype: str) -> tuple[str, dict[str, Any]]:
        if etype == "CLAIMS_INTEGRITY":
            return "remit-835", {"claimId": self.claim_id(), "note": "claim pended without reason code"}
        if etype == "MASTER_DATA":
            return "mdm", {"recordType": "LOCATION", "recordId": f"LOC-{self.rng.randrange(100, 999)}", "note": "address not standardized"}
        if etype == "PATIENT_SAFETY":
            return "incident-reporting", {"patientId": self.mrn(), "eventCategory": "FALL", "note": "safety event without detail"}
        return {"CLAIM_MISSING_PRIOR_AUTH": self.auth, "CLAIM_CODE_MISMATCH": self.coding,
                "ELIGIBILITY_COVERAGE_LAPSE": self.elig, "PROVIDER_CREDENTIAL_EXPIRED": self.cred,
                "PATIENT_DEMOGRAPHIC_CONFLICT": self.demo, "PHARMACY_DUPLICATE_THERAPY": self.rx}[etype]()

    def unknown(self) -> tuple[str | None, str, dict[str, Any]]:
        rng = self.rng
        choice = rng.randrange(3)
        if choice == 0:
            return "LAB_RESULT_DELAYED", "lis", {"accession": f"ACC-{rng.randrange(10**6, 10**7)}", "hoursLate": rng.randrange(2, 30)}
        if choice == 1:
            return "BED_CAPACITY_ALERT", "adt", {"unit": rng.choice(("ICU", "4 West", "ED")), "occupancyPct": rng.randrange(92, 110)}
        return None, "interface-engine", {"message": "HL7 ADT^A08 rejected by downstream", "channel": f"ADT-OUT-{rng.randrange(1, 9)}",
                                          "ackCode": "AE"}

    def scenarios(self) -> list[list[Line]]:
        E = self.envelope
        g: list[list[Line]] = []

        def one(etype: Any, sp: tuple[str, dict[str, Any]], **kw: Any) -> dict[str, Any]:
            line = E(etype, sp[0], sp[1], **kw)
            g.append([line])
            return line

        adult = {"plannedTransition": False}
        # ---- PHARMACY_DUPLICATE_THERAPY: high-alert, planned transition, Riverside pediatric override (<18)
        ssri = {"ndc": "00093-7180-01", "drugName": "sertraline 50 mg tablet", "therapeuticClass": "SSRI", "isHighAlert": False}
        warf = {"ndc": "00056-0172-70", "drugName": "warfarin 5 mg tablet", "therapeuticClass": "ANTICOAGULANT", "isHighAlert": True}
        ins = {"ndc": "00088-2220-33", "drugName": "insulin glargine 100 units/mL pen", "therapeuticClass": "INSULIN", "isHighAlert": True}
        one("PHARMACY_DUPLICATE_THERAPY", self.rx(patientAgeYears=46, **ssri, **adult))
        one("PHARMACY_DUPLICATE_THERAPY", self.rx(patientAgeYears=78, **warf, **adult), ts="Z")
        one("PHARMACY_DUPLICATE_THERAPY", self.rx(patientAgeYears=34, plannedTransition=True, **ssri))
        one("PHARMACY_DUPLICATE_THERAPY", self.rx(patientAgeYears=61, plannedTransition=True, **ins))
        one("PHARMACY_DUPLICATE_THERAPY", self.rx(patientAgeYears=17, plannedTransition=True, unit="Pediatrics", **ssri))
        one("PHARMACY_DUPLICATE_THERAPY", self.rx(patientAgeYears=18, plannedTransition=True, **ssri))
        one("PHARMACY_DUPLICATE_THERAPY", self.rx(patientAgeYears=9, unit="Pediatrics", **ssri, **adult), ts="-04:00")
        one(None, self.rx(patientAgeYears=71, **warf, **adult))                                          # detected
        one("PHARMACY_DUPLICATE_THERAPY", self.rx(patientAgeYears=55, **{**warf, "isHighAlert": "Y"}, **adult))  # flag as text
        one("pharmacy_duplicate_therapy", self.rx(patientAgeYears=40, **ssri, **adult))                   # wrong case

        # ---- CLAIM_MISSING_PRIOR_AUTH: 50k and 10-day thresholds, ED appeal (Summit kill switch), Riverside 10k rule
        def auth(setting: str, billed: float, days: int, **kw: Any) -> tuple[str, dict[str, Any]]:
            return self.auth(setting, billed, daysToFilingDeadline=days, **kw)

        one("CLAIM_MISSING_PRIOR_AUTH", auth("OUTPATIENT", 3_200.00, 60, carc="197"))
        one("CLAIM_MISSING_PRIOR_AUTH", auth("INPATIENT", 50_000.00, 60, carc="197"))
        one("CLAIM_MISSING_PRIOR_AUTH", auth("INPATIENT", 49_999.99, 60, carc="197"))
        one("CLAIM_MISSING_PRIOR_AUTH", auth("OUTPATIENT", 1_800.00, 10, carc="15"), ts="epoch_ms")
        one("CLAIM_MISSING_PRIOR_AUTH", auth("OUTPATIENT", 1_800.00, 11, carc="15"))
        one("CLAIM_MISSING_PRIOR_AUTH", auth("ED", 3_200.00, 60, carc="197"))
        one("CLAIM_MISSING_PRIOR_AUTH", auth("ED", 14_750.00, 45, carc="197"))
        one("CLAIM_MISSING_PRIOR_AUTH", auth("OUTPATIENT", 10_000.00, 90, carc="197"))
        one("CLAIM_MISSING_PRIOR_AUTH", auth("OUTPATIENT", 9_999.99, 90, carc="197"))
        one(None, auth("OUTPATIENT", 4_100.00, 120, carc="197"), bare=True)                              # bare, detected
        one("CLAIM_MISSING_AUTH", auth("INPATIENT", 52_000.00, 75, carc="15"))                            # misspelled
        a_min = self.auth()[1]
        one("CLAIM_MISSING_PRIOR_AUTH", ("remit-835", {"claimId": a_min["claimId"], "carc": "197"}))      # no patient

        # ---- CLAIM_CODE_MISMATCH: 25k / 500 thresholds, Summit < 2,000 override and its Medicare exception
        def code(billed: float, ptype: str = "COMMERCIAL", carc: str = "11") -> tuple[str, dict[str, Any]]:
            return self.coding(billed, ptype, carc=carc)

        one("CLAIM_CODE_MISMATCH", code(2_400.00))
        one("CLAIM_CODE_MISMATCH", code(25_000.00, carc="4"))
        one("CLAIM_CODE_MISMATCH", code(24_999.99, carc="4"))
        one("CLAIM_CODE_MISMATCH", code(499.99))
        one("CLAIM_CODE_MISMATCH", code(500.00))
        one("CLAIM_CODE_MISMATCH", code(1_999.99))
        one("CLAIM_CODE_MISMATCH", code(2_000.00))
        one("CLAIM_CODE_MISMATCH", code(1_999.99, "MEDICARE"), ts="+02:00")
        one("CLAIM_CODE_MISMATCH", code(180.00, "MEDICARE", carc="4"))
        one("CLAIM_CODE_MISMATCH", code(15_000.00))
        one(None, code(26_000.00))                                                                        # detected
        one(None, code(640.00, "MEDICAID", carc="4"), bare=True, key="none")

        # ---- ELIGIBILITY_COVERAGE_LAPSE: inpatient, grace period, 500k untyped rule, Riverside Medicaid override
        def elig(ptype: str, care: str | None, claim: bool, **kw: Any) -> tuple[str, dict[str, Any]]:
            payer = self.payer(ptype)
            if claim:
                base = self._claim(kw.pop("carc", "27"), setting=care, payer_type=ptype, billed=kw.pop("billedAmount", None))
                base.update(payerId=payer[0], payerName=payer[1])
            else:
                base = {"patientId": self.mrn(), "memberId": self.member_id(ptype), "payerId": payer[0],
                        "payerName": payer[1], "payerType": ptype, "serviceDate": self.service_date(1)}
            base.pop("careSetting", None)
            if care is not None:
                base["careSetting"] = care
            self.claim("ELIGIBILITY_COVERAGE_LAPSE", (base["memberId"], base["serviceDate"]))
            return ("remit-835" if claim else "adt" if care == "INPATIENT" else "eligibility-270"), self._apply(base, kw)

        one("ELIGIBILITY_COVERAGE_LAPSE", elig("COMMERCIAL", "OUTPATIENT", True, billedAmount=900.00))
        one("ELIGIBILITY_COVERAGE_LAPSE", elig("COMMERCIAL", "INPATIENT", False))
        one("ELIGIBILITY_COVERAGE_LAPSE", elig("MARKETPLACE", "OUTPATIENT", False, inGracePeriod=True))
        one("ELIGIBILITY_COVERAGE_LAPSE", elig("MARKETPLACE", "INPATIENT", True, inGracePeriod=True, billedAmount=500_000.00))
        one("ELIGIBILITY_COVERAGE_LAPSE", elig("MARKETPLACE", "INPATIENT", True, inGracePeriod=True, billedAmount=499_999.99))
        one("ELIGIBILITY_COVERAGE_LAPSE", elig("MEDICAID", "OUTPATIENT", True, billedAmount=900.00))
        one("ELIGIBILITY_COVERAGE_LAPSE", elig("MEDICAID", "INPATIENT", False), ts="date")
        one("ELIGIBILITY_COVERAGE_LAPSE", elig("MEDICAID", None, False))
        one("ELIGIBILITY_COVERAGE_LAPSE", elig("COMMERCIAL", "INPATIENT", True, billedAmount=120_000.00))
        one(None, elig("COMMERCIAL", "OUTPATIENT", False, coverageStatus="INACTIVE"))                    # 0.75 x 0.9
        one(None, elig("MEDICARE", "OUTPATIENT", True, carc="26", billedAmount=650.00))                 # 0.9
        one("ELIGIBILITY_COVERAGE_LAPSE", elig("COMMERCIAL", "OUTPATIENT", True, payerId=None, billedAmount=310.00))

        # ---- PROVIDER_CREDENTIAL_EXPIRED: DEA, booked patients (1/0), board cert (30/31 days), Summit license override
        def cred(ctype: str, days: int, appts: int, **kw: Any) -> tuple[str, dict[str, Any]]:
            return self.cred(credentialType=ctype, daysSinceExpiry=days, upcomingAppointments=appts,
                             credentialExpiryDate=(BASE_DATE - timedelta(days=days)).isoformat(), **kw)

        one("PROVIDER_CREDENTIAL_EXPIRED", cred("STATE_LICENSE", 3, 0, licenseState="IL", licenseNumber="036148870"))
        one("PROVIDER_CREDENTIAL_EXPIRED", cred("DEA", 1, 0, deaNumber=_dea(self.rng)))
        one("PROVIDER_CREDENTIAL_EXPIRED", cred("MALPRACTICE_INSURANCE", 2, 1, carrier="Coverys"))
        one("PROVIDER_CREDENTIAL_EXPIRED", cred("MALPRACTICE_INSURANCE", 2, 0, carrier="MedPro Group"))
        one("PROVIDER_CREDENTIAL_EXPIRED", cred("BOARD_CERTIFICATION", 30, 0, board="ABIM"), ts="epoch_s")
        one("PROVIDER_CREDENTIAL_EXPIRED", cred("BOARD_CERTIFICATION", 31, 0, board="ABFM"))
        one(None, cred("DEA", 4, 3, deaNumber=_dea(self.rng)))                                           # detected
        b7 = self._claim("B7")
        one(None, ("remit-835", {k: b7[k] for k in ("claimId", "npi", "payerId", "billedAmount", "carc")}
                   | {"providerId": f"PRV-{self.seq('provider', 20400)}"}))                            # B7: 0.8 x 0.9

        # ---- PATIENT_DEMOGRAPHIC_CONFLICT: billing, date of birth, Riverside MEDIUM override, weak CARC 31
        one("PATIENT_DEMOGRAPHIC_CONFLICT", self.demo(conflictFields=["address", "phone"], affectsBilling=False))
        one("PATIENT_DEMOGRAPHIC_CONFLICT", self.demo(conflictFields=["memberId"], affectsBilling=True))
        one("PATIENT_DEMOGRAPHIC_CONFLICT", self.demo(conflictFields=["dateOfBirth"], affectsBilling=True), ts="space")
        one("PATIENT_DEMOGRAPHIC_CONFLICT", self.demo(conflictFields=[], affectsBilling=False))
        one(None, ("remit-835", {"claimId": self.claim_id(), "patientId": self.mrn(), "carc": "31",
                                 "payerId": "UHC-87726", "billedAmount": 212.00}))                    # CARC 31, no pair
        one(None, ("remit-835", {"claimId": self.claim_id(), "patientId": self.mrn(), "carc": "31",
                                 "duplicatePatientId": f"MRN-{self.seq('mrn2', 9_100_000)}"}))      # 0.5 x 0.9
        one(None, self.demo(conflictFields=["sex"], affectsBilling=False), bare=True)

        # ---- parents, unknown types, odd envelopes
        one("PATIENT_SAFETY", ("incident-reporting", {"patientId": self.mrn(), "note": "safety event without detail"}))
        one("CLAIMS_INTEGRITY", ("remit-835", {"claimId": self.claim_id()}))
        one("MASTER_DATA", ("mdm", {"recordType": "LOCATION", "recordId": "LOC-311", "note": "address not standardized"}))
        one("LAB_RESULT_DELAYED", ("lis", {"accession": "ACC-5512093", "hoursLate": 6}))
        one("PRIOR_AUTH_DENIAL", auth("OUTPATIENT", 2_750.00, 100, carc="197"))                        # unknown, detectable
        one(None, ("interface-engine", {"message": "HL7 ADT^A08 rejected by downstream", "channel": "ADT-OUT-3",
                                        "ackCode": "AE"}), bare=True)
        one(7, code(3_300.00))                                                                           # type not a string
        one("CLAIM_CODE_MISMATCH", code(1_140.00))
        g[-1][0].pop("sourceSystem")                                                                      # no sourceSystem
        one("PROVIDER_CREDENTIAL_EXPIRED", cred("STATE_LICENSE", 12, 0, licenseState="OH"), ts="bad")
        one("CLAIM_MISSING_PRIOR_AUTH", auth("OUTPATIENT", 2_240.00, 80, carc="197"), ts="none")
        one("PHARMACY_DUPLICATE_THERAPY", self.rx(patientAgeYears=66, **ssri, **adult), ts="naive", ts_in_payload=True)
        one("CLAIM_CODE_MISMATCH", code(760.00), ts="epoch_float")
        one("ELIGIBILITY_COVERAGE_LAPSE", elig("COMMERCIAL", "OUTPATIENT", True, billedAmount=455.00), ts="z")

        # ---- id generation
        one(None, self.rx(patientAgeYears=52, **ssri, **adult), bare=True, eid=False, key="event")
        noid_idem = one("CLAIM_CODE_MISMATCH", code(1_480.00), eid=False, key="idem")
        one("PATIENT_DEMOGRAPHIC_CONFLICT", self.demo(conflictFields=["phone"]), eid=False, key="none")

        # ---- duplicates
        d_idem = E("CLAIM_MISSING_PRIOR_AUTH", *auth("OUTPATIENT", 6_850.00, 44, carc="197"), key="idem")
        g.append([d_idem, self.resend(d_idem)])
        d_retry = E("CLAIM_CODE_MISMATCH", *code(3_975.00), key="idem")
        g.append([d_retry, self.retry_same_key(d_retry)])
        d_src = E("PROVIDER_CREDENTIAL_EXPIRED", *cred("MALPRACTICE_INSURANCE", 6, 0, carrier="ProAssurance"), key="source")
        g.append([d_src, {**d_src, "exceptionId": _Id(), "timestamp": _Ts()}])
        d_evt = E("PHARMACY_DUPLICATE_THERAPY", *self.rx(patientAgeYears=58, **ssri, **adult), key="event")
        g.append([d_evt, {**d_evt, "exceptionId": _Id()}])
        d_eid = E("CLAIM_CODE_MISMATCH", *code(820.00), key="none")
        g.append([d_eid, {**d_eid, "rawPayload": {**d_eid["rawPayload"], "billedAmount": 845.00}}])
        self.after(g, noid_idem, {**noid_idem, "timestamp": _Ts()})

        # ---- recurrences
        r_cred = E("PROVIDER_CREDENTIAL_EXPIRED", *cred("STATE_LICENSE", 1, 0, licenseState="WI"), key="event")
        g.append([r_cred, self.recur(r_cred, daysSinceExpiry=2), self.recur(r_cred, daysSinceExpiry=3),
                  self.recur(r_cred, daysSinceExpiry=4)])
        r_demo = E("PATIENT_DEMOGRAPHIC_CONFLICT", *self.demo(conflictFields=["address"], affectsBilling=False), key="idem")
        g.append([r_demo, self.recur(r_demo, key="event", send_type=None, matchScore=0.91)])
        r_el = E("ELIGIBILITY_COVERAGE_LAPSE", *elig("COMMERCIAL", "OUTPATIENT", True, billedAmount=1_310.00), key="event")
        p = r_el["rawPayload"]
        g.append([r_el, self.envelope(None, "eligibility-270", {
            "patientId": p["patientId"], "memberId": p["memberId"], "payerId": p["payerId"], "serviceDate": p["serviceDate"],
            "coverageStatus": "INACTIVE"}, key="idem")])                                            # same member+date
        r_bare = one(None, self.rx(patientAgeYears=83, **warf, **adult), bare=True, key="none")
        self.after(g, r_bare, self.recur(r_bare, key="none"))

        g.extend([b] for b in self.bad_lines(d_idem))
        return g


# ============================================================================================ assembly

_GENS: dict[str, type[_Base]] = {"finance": FinanceGen, "healthcare": HealthcareGen}


def _merge(rng: random.Random, groups: list[list[Line]]) -> list[Line]:
    """Random k-way merge: keeps each group's internal order, so repeats stay after what they repeat."""
    remaining = [len(grp) for grp in groups]
    pos = [0] * len(groups)
    total = sum(remaining)
    out: list[Line] = []
    # Fenwick-free weighted pick: groups are short, so a cumulative walk is fast enough (O(k) per pick).
    while total:
        r = rng.randrange(total)
        for i, left in enumerate(remaining):
            if r < left:
                out.append(groups[i][pos[i]])
                pos[i] += 1
                remaining[i] -= 1
                total -= 1
                break
            r -= left
    return out


def _merge_two(rng: random.Random, a: list[Line], b: list[Line]) -> list[Line]:
    out: list[Line] = []
    i = j = 0
    while i < len(a) or j < len(b):
        if j >= len(b) or (i < len(a) and rng.randrange(len(a) - i + len(b) - j) < len(a) - i):
            out.append(a[i])
            i += 1
        else:
            out.append(b[j])
            j += 1
    return out


_ORDERS = (
    ("rawPayload",),  # payload first, envelope after
    ("idempotencyKey", "exceptionId"),
    ("timestamp",),
    ("sourceSystem", "exceptionType"),
)


def _finalize(rng: random.Random, lines: list[Line], prefix: str, ts_field: str) -> list[Line]:
    """Assign exception ids and timestamps in file order; vary the key order of some lines."""
    times = _line_times(rng, len(lines))
    rand = rng.random
    counter = 0
    out: list[Line] = []
    for i, line in enumerate(lines):
        if line.__class__ is str:
            out.append(line)
            continue
        new = dict(line)  # type: ignore[arg-type]
        ident = new.get("exceptionId")
        if ident.__class__ is _Id:
            if ident.value is None:
                counter += 1
                ident.value = f"EXC-{prefix}-{counter:06d}"
            new["exceptionId"] = ident.value
        dt: datetime | None = None
        for key in ("timestamp", ts_field):
            ts = new.get(key)
            if ts.__class__ is _Ts:
                dt = dt or datetime.fromtimestamp(times[i], UTC)
                value = _resolve_ts(rand, ts, dt)
                if value is None:
                    del new[key]
                else:
                    new[key] = value
        payload = new.get("rawPayload")
        if payload.__class__ is dict and payload.get(ts_field).__class__ is _Ts:
            payload = dict(payload)
            dt = dt or datetime.fromtimestamp(times[i], UTC)
            value = _resolve_ts(rand, payload[ts_field], dt)
            if value is None:
                del payload[ts_field]
            else:
                payload[ts_field] = value
            new["rawPayload"] = payload
        r = rand()
        if r < 0.12:  # integrators send fields in their own order
            first = _ORDERS[int(rand() * len(_ORDERS))]
            new = {**{k: new[k] for k in first if k in new}, **{k: v for k, v in new.items() if k not in first}}
        elif r < 0.16:
            new = dict(reversed(list(new.items())))
        out.append(new)
    return out


def _resolve_ts(rand: Callable[[], float], ts: _Ts, dt: datetime) -> Any:
    if ts.value is None:
        fmt = ts.fmt or _TS_NAMES[min(bisect.bisect(_TS_CUM, rand() * _TS_CUM[-1]), len(_TS_NAMES) - 1)]
        ts.value = ("none",) if fmt == "none" else _render_ts(dt, fmt)
    return None if ts.value == ("none",) else ts.value


def generate(domain: str, n: int, seed: int = DEFAULT_SEED) -> list[dict[str, Any] | str]:
    """`n` example lines for `domain` ("finance" or "healthcare"): dicts, or str for deliberately bad raw lines.

    The coverage scenarios come first in priority: when `n` is smaller than their number, a dependency-safe
    random subset-prefix of them is returned; otherwise realistic filler makes up the rest.
    """
    if domain not in _GENS:
        raise ValueError(f"unknown domain {domain!r}; choose from {', '.join(DOMAINS)}")
    if n < 0:
        raise ValueError("n must be >= 0")
    rng = FastRandom(f"{domain}:{seed}")
    gen = _GENS[domain](rng)
    groups = gen.scenarios()
    scenario_lines = _merge(rng, groups)
    fill = gen.filler(max(0, n - len(scenario_lines)))
    lines = _merge_two(rng, scenario_lines, fill)[:n]
    return _finalize(rng, lines, gen.id_prefix, gen.ts_field)


def dumps_line(line: dict[str, Any] | str) -> str:
    return line if isinstance(line, str) else json.dumps(line, ensure_ascii=False)


def write_lines(path: Path, lines: Iterable[dict[str, Any] | str]) -> int:
    count = 0
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        for line in lines:
            fh.write(dumps_line(line) + "\n")
            count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"random seed (default {DEFAULT_SEED})")
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT, help=f"lines per domain (default {DEFAULT_COUNT})")
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent.parent / "examples",
                        help="directory for <domain>.jsonl (default: the repository's examples/)")
    parser.add_argument("--domain", choices=DOMAINS, action="append", help="only this domain (repeatable)")
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for domain in args.domain or DOMAINS:
        path = args.out_dir / f"{domain}.jsonl"
        written = write_lines(path, generate(domain, args.count, args.seed))
        print(f"wrote {written} lines to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
