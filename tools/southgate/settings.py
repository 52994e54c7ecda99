"""Tunable behaviour of a southgate instance (lifetimes, skew, clock offset, rate limit ...).

Defaults follow docs/protocol.md §H. Settings live in the database so `serve` keeps them across restarts,
and the admin API changes them at run time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

MIB = 1024 * 1024
MAX_COUNT = 10**12  # bytes and counts: more than any test needs, within SQLite's integers
MAX_SPAN_S = 100 * 365 * 86400  # times and the clock's offset: a century, so every date keeps four digits


@dataclass
class Settings:
    clock_offset_s: float = 0.0
    secret_lifetime_s: int = 7 * 86400
    access_token_lifetime_s: int = 1800
    iat_lifetime_s: int = 7 * 86400
    clock_skew_s: int = 300
    max_assertion_lifetime_s: int = 86400
    rotation_grace_s: int = 0
    rate_limit: int = 0  # requests per rate_window_s per agent; 0 = off
    rate_window_s: float = 60.0
    max_exchange_bytes: int = 10 * MIB
    require_mapping: bool = True
    mapping_calls_per_hour: int = 1050
    diagnostic_activations_per_tenant: int = 5
    bulk_page_records: int = 5000  # IoT TS Bulk records per answer; more follow via nextRecord

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def update(self, changes: dict[str, Any]) -> None:
        """Apply changes after checking names and types; ValueError names the offending key."""
        known = {f.name: f for f in fields(self)}
        staged: dict[str, Any] = {}
        for key, value in changes.items():
            if key not in known:
                raise ValueError("unknown setting {!r} (known: {})".format(key, ", ".join(sorted(known))))
            kind = type(getattr(self, key))
            if kind is bool:
                if not isinstance(value, bool):
                    raise ValueError(f"setting {key!r} must be true or false")
            elif kind is int:
                top = MAX_SPAN_S if key.endswith("_s") else MAX_COUNT
                if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
                    raise ValueError(f"setting {key!r} must be an integer from 0 to {top}")
            elif kind is float:
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ValueError(f"setting {key!r} must be a number")
                value = float(value)
                low = -MAX_SPAN_S if key == "clock_offset_s" else 0
                if not low <= value <= MAX_SPAN_S:  # NaN too
                    raise ValueError(f"setting {key!r} must be a number from {low} to {MAX_SPAN_S}")
            staged[key] = value
        for key, value in staged.items():
            setattr(self, key, value)
