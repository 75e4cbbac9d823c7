"""Per-product tumbling event-time windows: what trade flow and volatility share.

Each product has at most one open window (``[start, start + window_ms)``, epoch-aligned) and a count of late
records (whose window is before the open one: already emitted). Subclasses define the window's accumulators
(a dataclass with ``start_ms`` and ``record(product, window_ms)``) and `update`. State round-trips through JSON,
per product (`product_state` / `resume_product`, what a restarted function resumes from) or whole
(`state` / `from_state`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Self

from rtca.analytics.checks import MAX_VALUE, latest_time_ms

DEFAULT_WINDOW_MS = 60_000


@dataclass(slots=True)
class ProductWindow:
    window: Any = None  # the open window's accumulators, or None
    late: int = 0


@dataclass
class WindowsByProduct:
    window_ms: int = DEFAULT_WINDOW_MS
    products: dict[str, ProductWindow] = field(default_factory=dict)
    #: The window accumulators' dataclass.
    window_class: ClassVar[type]

    def __post_init__(self) -> None:
        if self.window_ms <= 0:
            raise ValueError(f"window_ms must be > 0, not {self.window_ms}")

    @property
    def late(self) -> int:
        return sum(p.late for p in self.products.values())

    def product(self, product: str) -> ProductWindow:
        state = self.products.get(product)
        if state is None:
            state = self.products[product] = ProductWindow()
        return state

    def flush(self) -> list[dict[str, Any]]:
        """Close every open window (end of a finite stream; the functions never call it)."""
        out = [p.window.record(name, self.window_ms) for name, p in self.products.items() if p.window is not None]
        for p in self.products.values():
            p.window = None
        return out

    def product_state(self, product: str) -> dict[str, Any]:
        """One product's state (JSON-ready): its open window's accumulators and its count of late records."""
        p = self.products.get(product) or ProductWindow()
        return {"late": p.late, "window": asdict(p.window) if p.window else None}

    def resume_product(self, product: str, state: Mapping[str, Any]) -> None:
        """Take one product's state from `product_state`; TypeError / ValueError (nothing taken) for a state whose
        window fields are not finite numbers (None only where the field allows it): such a window would fail every
        later record of the product; or whose times are not ints up to now (a window starting in 2286 made every
        later record of the product late, unacknowledged, for good), or whose prices are not > 0 (the log of 0 failed
        every later price of the window)."""
        window = state["window"]
        late = int(state["late"])
        latest = latest_time_ms()
        if window:
            for name, spec in self.window_class.__dataclass_fields__.items():
                value = window.get(name)
                if value is None:
                    if name in window and spec.default is not None:  # only fields that start as None may be
                        raise TypeError(f"window.{name} must not be null")
                elif type(value) not in (int, float) or not math.isfinite(value):
                    raise TypeError(f"window.{name} must be a finite number, not {str(value)[:40]}")
                elif name.endswith("_ms") and not (type(value) is int and 0 <= value <= latest):
                    raise ValueError(f"window.{name} must be a time in ms up to now, not {str(value)[:40]}")
                elif name.endswith("_price") and not 0 < value < MAX_VALUE:
                    raise ValueError(f"window.{name} must be a price (> 0), not {str(value)[:40]}")
        self.products[product] = ProductWindow(self.window_class(**window) if window else None, late)

    def state(self) -> dict[str, Any]:
        return {"window_ms": self.window_ms, "products": {p: self.product_state(p) for p in self.products}}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Self:
        windows = cls(int(state["window_ms"]))
        for product, s in state["products"].items():
            windows.resume_product(product, s)
        return windows
