"""The level2 book our servers keep, so that a new subscriber gets a snapshot of the current state.

Levels keep the exchange's own price and size strings (what a snapshot must repeat), keyed by `Decimal` price.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from rtca.feed.protocol import Side


def _level(price: Any, size: Any) -> tuple[Decimal, Decimal] | None:
    """A level's price and size as decimals; None for one that is not two finite decimals (strings as the exchange
    writes them, or numbers), which the book skips: a "NaN" kept as a price would fail every later snapshot, which
    sorts the prices."""
    try:
        level = Decimal(price), Decimal(size)
    except (TypeError, ValueError, ArithmeticError):
        return None
    return level if level[0].is_finite() and level[1].is_finite() else None


class L2Book:
    __slots__ = ("asks", "bids")

    def __init__(self) -> None:
        self.bids: dict[Decimal, tuple[str, str]] = {}
        self.asks: dict[Decimal, tuple[str, str]] = {}

    def side(self, side: Side) -> dict[Decimal, tuple[str, str]]:
        return self.bids if side == "buy" else self.asks

    def reset(self, bids: Iterable[Sequence[Any]], asks: Iterable[Sequence[Any]]) -> None:
        """Replace the book with a snapshot's levels ([price, size]); a level that is no pair of finite decimals is
        left out (`_level`)."""
        self.bids, self.asks = _levels(bids), _levels(asks)

    def apply(self, side: Side, price: Any, size: Any) -> None:
        """One l2update change: the new absolute size at a price; zero removes the level. A change that is no
        pair of finite decimals is skipped (`_level`)."""
        level = _level(price, size)
        if level is None:
            return
        levels = self.side(side)
        if level[1]:
            levels[level[0]] = (price, size)
        else:
            levels.pop(level[0], None)

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


def _levels(levels: Iterable[Sequence[Any]]) -> dict[Decimal, tuple[Any, Any]]:
    kept = {}
    for price, size in levels:
        level = _level(price, size)
        if level is not None:
            kept[level[0]] = (price, size)
    return kept
