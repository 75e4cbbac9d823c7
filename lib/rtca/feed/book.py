"""The level2 book our servers keep, so that a new subscriber gets a snapshot of the current state.

Levels keep the exchange's own price and size strings (what a snapshot must repeat), keyed by `Decimal` price.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from rtca.feed.protocol import Side


class L2Book:
    __slots__ = ("asks", "bids")

    def __init__(self) -> None:
        self.bids: dict[Decimal, tuple[str, str]] = {}
        self.asks: dict[Decimal, tuple[str, str]] = {}

    def side(self, side: Side) -> dict[Decimal, tuple[str, str]]:
        return self.bids if side == "buy" else self.asks

    def reset(self, bids: Iterable[Sequence[str]], asks: Iterable[Sequence[str]]) -> None:
        """Replace the book with a snapshot's levels ([price, size] strings)."""
        self.bids = {Decimal(price): (price, size) for price, size in bids}
        self.asks = {Decimal(price): (price, size) for price, size in asks}

    def apply(self, side: Side, price: str, size: str) -> None:
        """One l2update change: the new absolute size at a price; zero removes the level."""
        levels = self.side(side)
        key = Decimal(price)
        if Decimal(size):
            levels[key] = (price, size)
        else:
            levels.pop(key, None)

    def best(self, side: Side) -> Decimal | None:
        levels = self.side(side)
        if not levels:
            return None
        return max(levels) if side == "buy" else min(levels)

    def snapshot(self, product: str) -> dict[str, Any]:
        """A `snapshot` frame: bids best (highest) first, asks best (lowest) first."""
        return {
            "type": "snapshot",
            "product_id": product,
            "bids": [list(self.bids[price]) for price in sorted(self.bids, reverse=True)],
            "asks": [list(self.asks[price]) for price in sorted(self.asks)],
        }
