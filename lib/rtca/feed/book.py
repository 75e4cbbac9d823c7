"""The level2 book our servers keep, so that a new subscriber gets a snapshot of the current state.

Levels keep the exchange's own price and size strings (what a snapshot must repeat), keyed by `Decimal` price.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from rtca.feed.protocol import Side, finite_decimal


def _decimal(text: str) -> Decimal:
    """A price or size the book can keep and repeat: a string (as the exchange writes it) of a finite decimal."""
    if type(text) is not str:
        raise TypeError(f"expected a decimal string, got {type(text).__name__}")
    return finite_decimal(text)


def _level(price: str, size: str) -> Decimal:
    """The key of a snapshot's level: its price, once price and size are both decimal strings."""
    _decimal(size)
    return _decimal(price)


class L2Book:
    __slots__ = ("asks", "bids")

    def __init__(self) -> None:
        self.bids: dict[Decimal, tuple[str, str]] = {}
        self.asks: dict[Decimal, tuple[str, str]] = {}

    def side(self, side: Side) -> dict[Decimal, tuple[str, str]]:
        return self.bids if side == "buy" else self.asks

    def reset(self, bids: Iterable[Sequence[str]], asks: Iterable[Sequence[str]]) -> None:
        """Replace the book with a snapshot's levels ([price, size] strings); raises ValueError or TypeError, the book
        unchanged, for a level that is not a decimal string (a "NaN" kept as a key would fail every later snapshot,
        which sorts them)."""
        new_bids = {_level(price, size): (price, size) for price, size in bids}
        self.asks = {_level(price, size): (price, size) for price, size in asks}
        self.bids = new_bids

    def apply(self, side: Side, price: str, size: str) -> None:
        """One l2update change: the new absolute size at a price; zero removes the level. ValueError or TypeError,
        the book unchanged, for a price or size that is not a decimal string."""
        levels = self.side(side)
        key = _decimal(price)
        if _decimal(size):
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
