"""Fault injection for the vendor sandbox: a parsed spec and a reproducible draw per call."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

VENDORS = ("clearbit", "jira", "sendgrid", "slack", "gemini", "website")
WILDCARD = "*"
# Drawn in this order from one random number, so a spec's meaning never depends on key order.
# `drop` comes last so adding it shifts no earlier kind's draws for an existing seed.
KINDS = ("error", "rate_limit", "timeout", "garbage", "invalid", "hostile", "drop")
# The model's own misbehaviour (Gemini only): an answer that is not valid JSON or misses
# fields, or one that breaks the agent's rules (a tool outside the registry, a new recipient
# or channel, injected instructions followed). Answered 200, like the real thing.
MODEL_KINDS = ("invalid", "hostile")
MODEL_VENDOR = "gemini"
DEFAULT_HANG_S = 30.0
ERROR_STATUSES = (500, 503)


@dataclass(frozen=True)
class Fault:
    """What to do to one call: a kind (or None), its 5xx status, and the added delay."""

    kind: str | None = None
    status: int | None = None
    latency_s: float = 0.0


@dataclass(frozen=True)
class VendorFaults:
    """One vendor's fault probabilities (kind -> p) and fixed added latency."""

    odds: dict[str, float] = field(default_factory=dict)
    latency_ms: float = 0.0
    brownout_ms: float = 0.0  # added latency inside the plan's brownout window only


@dataclass(frozen=True)
class FaultPlan:
    """Which faults to inject, per vendor, reproducibly for a seed.

    Spec: comma-separated `vendor.kind=value` with vendor one of VENDORS or `*`, kind one of
    error, rate_limit, timeout, garbage, drop (answered 2xx, the effect not kept), and for
    gemini invalid, hostile (probabilities) or
    latency_ms (milliseconds on every call) or brownout_ms (milliseconds on every call inside
    the brownout window); plus
    `seed=N`, `hang_s=S` (how long a `timeout` fault holds its answer), `brownout=A-B` (the
    window, in seconds from `t0`) and `t0=EPOCH` (default: when the sandbox starts, so a
    benchmark that restarts the sandbox can keep one window across restarts).
    """

    vendors: dict[str, VendorFaults] = field(default_factory=dict)
    seed: str = "0"
    hang_s: float = DEFAULT_HANG_S
    brownout: tuple[float, float] | None = None
    t0: float | None = None

    @classmethod
    def parse(cls, spec: str | None) -> FaultPlan:
        """Parse a spec such as `jira.error=0.3,*.latency_ms=50,seed=7,hang_s=5`.

        Raises:
            ValueError: naming the offending entry, for any unknown key or out-of-range value.
        """
        seed, hang_s = "0", DEFAULT_HANG_S
        brownout: tuple[float, float] | None = None
        t0: float | None = None
        wildcard: dict[str, float] = {}
        explicit: dict[str, dict[str, float]] = {}
        for raw in (spec or "").split(","):
            entry = raw.strip()
            if not entry:
                continue
            key, sep, value = (part.strip() for part in entry.partition("="))
            if not sep or not key or not value:
                raise ValueError(f"fault spec entry {entry!r} is not key=value")
            if key == "seed":
                seed = value
            elif key == "hang_s":
                hang_s = _number(entry, value, minimum=0.0)
            elif key == "t0":
                t0 = _number(entry, value, minimum=0.0)
            elif key == "brownout":
                start, dash, end = value.partition("-")
                if not dash:
                    raise ValueError(f"fault spec entry {entry!r}: expected brownout=START-END")
                window = (_number(entry, start, minimum=0.0), _number(entry, end, minimum=0.0))
                if window[1] <= window[0]:
                    raise ValueError(
                        f"fault spec entry {entry!r}: the window ends before it starts"
                    )
                brownout = window
            else:
                vendor, dot, kind = key.partition(".")
                if not dot:
                    raise ValueError(
                        f"fault spec entry {entry!r}: expected vendor.kind, seed or hang_s"
                    )
                if vendor != WILDCARD and vendor not in VENDORS:
                    raise ValueError(
                        f"fault spec entry {entry!r}: unknown vendor {vendor!r} "
                        f"(one of {', '.join(VENDORS)} or *)"
                    )
                if kind in ("latency_ms", "brownout_ms"):
                    number = _number(entry, value, minimum=0.0)
                elif kind in KINDS:
                    if kind in MODEL_KINDS and vendor not in (MODEL_VENDOR, WILDCARD):
                        raise ValueError(
                            f"fault spec entry {entry!r}: {kind} is a model's fault, "
                            f"only for {MODEL_VENDOR}"
                        )
                    number = _number(entry, value, minimum=0.0, maximum=1.0)
                else:
                    raise ValueError(
                        f"fault spec entry {entry!r}: unknown fault {kind!r} "
                        f"(one of {', '.join(KINDS)}, latency_ms, brownout_ms)"
                    )
                target = wildcard if vendor == WILDCARD else explicit.setdefault(vendor, {})
                target[kind] = number

        vendors: dict[str, VendorFaults] = {}
        for vendor in VENDORS:
            # A vendor's own entry wins over the wildcard, whatever the order in the spec.
            merged = {**wildcard, **explicit.get(vendor, {})}
            odds = {
                kind: merged[kind]
                for kind in KINDS
                if merged.get(kind) and (vendor == MODEL_VENDOR or kind not in MODEL_KINDS)
            }
            total = sum(odds.values())
            if total > 1.0 + 1e-9:
                raise ValueError(
                    f"fault probabilities for {vendor} add up to {total:g}, more than 1"
                )
            latency = merged.get("latency_ms", 0.0)
            brownout_ms = merged.get("brownout_ms", 0.0)
            if odds or latency or brownout_ms:
                vendors[vendor] = VendorFaults(
                    odds=odds, latency_ms=latency, brownout_ms=brownout_ms
                )
        if brownout is None and any(v.brownout_ms for v in vendors.values()):
            raise ValueError("brownout_ms needs a window: brownout=START-END (seconds)")
        return cls(vendors=vendors, seed=seed, hang_s=hang_s, brownout=brownout, t0=t0)

    @property
    def active(self) -> bool:
        return bool(self.vendors)

    def fault_for(self, vendor: str, n: int, now: float | None = None) -> Fault:
        """The fault for a vendor's n-th call (0-based): the same answer every time, plus the
        brownout's latency when `now` (epoch seconds) falls in the window.

        Each call draws from its own generator seeded by (seed, vendor, n), so calls to other
        vendors, or their interleaving across threads, never shift this vendor's sequence.
        """
        faults = self.vendors.get(vendor)
        if faults is None:
            return Fault()
        latency_s = faults.latency_ms / 1000.0
        if faults.brownout_ms and self.brownout and now is not None and self.t0 is not None:
            since = now - self.t0
            if self.brownout[0] <= since < self.brownout[1]:
                latency_s += faults.brownout_ms / 1000.0
        rng = random.Random(f"{self.seed}:{vendor}:{n}")
        draw = rng.random()
        threshold = 0.0
        for kind in KINDS:
            threshold += faults.odds.get(kind, 0.0)
            if draw < threshold:
                status = rng.choice(ERROR_STATUSES) if kind == "error" else None
                return Fault(kind=kind, status=status, latency_s=latency_s)
        return Fault(latency_s=latency_s)


def _number(entry: str, value: str, *, minimum: float, maximum: float | None = None) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"fault spec entry {entry!r}: {value!r} is not a number") from None
    if not math.isfinite(number) or number < minimum or (maximum is not None and number > maximum):
        bounds = (
            f"between {minimum:g} and {maximum:g}" if maximum is not None else f">= {minimum:g}"
        )
        raise ValueError(f"fault spec entry {entry!r}: {value} must be {bounds}")
    return number
