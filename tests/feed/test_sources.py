"""Source options: validation and the default subscriptions of each source."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from rtca.errors import ConfigError
from rtca.feed.capture import Capture
from rtca.feed.protocol import COINBASE_WS_URL, LIVE_CHANNELS, LIVE_PRODUCTS
from rtca.feed.sources import Endpoint, SourceSpec, open_source

Run = Callable[..., Any]


def endpoint(run: Run, spec: SourceSpec) -> Endpoint:
    async def opened() -> Endpoint:
        async with open_source(spec) as found:
            return found

    return run(opened())


def test_live_defaults(run: Run) -> None:
    found = endpoint(run, SourceSpec.build("coinbase"))
    assert (found.url, found.products, found.channels) == (COINBASE_WS_URL, LIVE_PRODUCTS, LIVE_CHANNELS)
    assert LIVE_PRODUCTS == ("BTC-USD", "ETH-USD", "USDT-USD", "SOL-USD", "XRP-USD", "DOGE-USD", "ADA-USD", "LTC-USD")
    assert LIVE_CHANNELS == ("ticker", "matches", "level2_batch", "heartbeat", "status")


def test_a_replay_subscribes_to_what_the_capture_holds_on_a_local_port(run: Run, shipped: Capture) -> None:
    found = endpoint(run, SourceSpec.build("replay", speed="max"))
    assert found.url.startswith("ws://127.0.0.1:") and found.server is not None
    assert (found.products, found.channels) == (shipped.products, ("level2", "ticker", "matches"))


def test_explicit_products_channels_and_url(run: Run) -> None:
    spec = SourceSpec.build("simulator", url="ws://10.0.0.1:9", products=["X-Y"], channels=["ticker"])
    found = endpoint(run, spec)
    assert (found.url, found.products, found.channels, found.server) == ("ws://10.0.0.1:9", ("X-Y",), ("ticker",),
                                                                         None)


@pytest.mark.parametrize("options", [{"kind": "kraken"}, {"kind": "replay", "channels": ["tickers"]},
                                     {"kind": "replay", "speed": "fast"}])
def test_bad_options_are_config_errors(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        SourceSpec.build(**options)


def test_a_server_given_in_place_of_the_exchange_is_not_labelled_coinbase() -> None:
    live = "wss://ws-feed.exchange.coinbase.com"
    assert SourceSpec.build("coinbase").label(live) == "coinbase"
    assert SourceSpec.build("coinbase", url=live).label(live) == "coinbase"
    assert SourceSpec.build("coinbase", url="ws://127.0.0.1:9").label(live) == "url"
    assert SourceSpec.build("replay", url="ws://127.0.0.1:9").label(live) == "replay"


@pytest.mark.parametrize("options, says", [
    ({"kind": "coinbase", "capture": "x.capture"}, "--capture is for --source replay"),
    ({"kind": "simulator", "loop": True}, "--loop is for --source replay"),
    ({"kind": "replay", "rate": "max"}, "--rate is for --source simulator"),
    ({"kind": "coinbase", "seed": 0}, "--seed is for --source simulator"),
    ({"kind": "simulator", "url": "ws://127.0.0.1:9", "rate": 5.0}, "not for the server at --url"),
])  # fmt: skip
def test_options_the_source_would_ignore_are_refused(options: dict[str, Any], says: str) -> None:
    """Given to another source they were ignored: `--capture X` alone ingested live Coinbase."""
    with pytest.raises(ConfigError, match=says.replace("-", r"\-")):
        SourceSpec.build(**options)


def test_options_not_given_are_the_sources_defaults() -> None:
    assert (SourceSpec.build("replay").speed, SourceSpec.build("replay", speed="max").speed) == (1.0, None)
    simulator = SourceSpec.build("simulator")
    assert (simulator.rate, simulator.seed, SourceSpec.build("simulator", rate="max").rate) == (100.0, 0, None)


@pytest.mark.parametrize("options", [{"kind": "replay", "capture": ""}, {"kind": "coinbase", "products": []},
                                     {"kind": "simulator", "channels": [" "]}])
def test_an_empty_selection_is_refused_not_taken_for_the_default(options: dict[str, Any]) -> None:
    """`capture=""` replayed the shipped capture, empty products the source's: what was asked was nothing."""
    with pytest.raises(ConfigError, match="an empty"):
        SourceSpec.build(**options)
