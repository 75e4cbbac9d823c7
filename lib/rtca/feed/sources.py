"""Where frames come from: the exchange, a replay of a capture or the simulator, and what to subscribe to.

A replay or simulator runs in-process on 127.0.0.1 (port 0) and ingest connects to it through a real websocket,
so the code path is the live one; with `url` set, ingest connects to a server running elsewhere instead
(`rtca replay serve`). Defaults: live = the LIVE_PRODUCTS on LIVE_CHANNELS; a capture = the products and channels
it holds; the simulator = LIVE_PRODUCTS on LIVE_CHANNELS. A replay's options (capture, speed, loop, shift_time)
and the simulator's (rate, seed) are refused for any other source, and the pacing ones with `url` (the server
there paces itself): ignored, they let `--capture X` alone ingest live Coinbase.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from rtca.errors import ConfigError
from rtca.feed.capture import SHIPPED_CAPTURE, read_capture
from rtca.feed.protocol import CHANNELS, COINBASE_WS_URL, LIVE_CHANNELS, LIVE_PRODUCTS, subscribe_frame
from rtca.feed.replay import parse_speed, replay_server
from rtca.feed.server import Faults, FeedServer
from rtca.feed.simulator import simulator_server

SourceKind = Literal["coinbase", "replay", "simulator"]

DEFAULT_SPEED = 1.0
DEFAULT_RATE = 100.0
DEFAULT_SEED = 0

#: The options of one source only; `(url)`: of the server the workbench runs in-process, not taken with `url`.
SOURCE_OPTIONS: dict[str, tuple[SourceKind, bool]] = {
    "capture": ("replay", False), "speed": ("replay", True), "loop": ("replay", True),
    "shift_time": ("replay", True), "rate": ("simulator", True), "seed": ("simulator", True),
}


def refuse_other_sources_options(kind: str, given: Mapping[str, object], url: str | None = None) -> None:
    """A ConfigError for an option `given` (name: value, None or False when not given) that `kind` would ignore:
    another source's, or one pacing the in-process server while `url` names a server elsewhere."""
    for name, value in given.items():
        if value is None or value is False or name not in SOURCE_OPTIONS:
            continue
        owner, paces = SOURCE_OPTIONS[name]
        flag = "--" + name.replace("_", "-")
        written = f"{flag} {value:g}" if isinstance(value, float) else flag if value is True else f"{flag} {value}"
        if owner != kind:
            raise ConfigError(f"{flag} is for --source {owner} (did you mean --source {owner} {written}?)",
                              hint=f"--source {kind} would ignore it; `rtca ingest run --help` lists the options")
        if paces and url:
            raise ConfigError(f"{flag} is for the {owner} rtca runs itself, not for the server at --url {url}",
                              hint=f"give it to that server (`rtca {owner} serve {written}`), or leave out --url")


@dataclass(frozen=True)
class SourceSpec:
    """A source and its options; None products / channels mean the source's defaults."""

    kind: SourceKind = "coinbase"
    url: str | None = None
    capture: Path = SHIPPED_CAPTURE
    speed: float | None = DEFAULT_SPEED
    """Replay pace; None = as fast as ingest reads."""
    loop: bool = False
    shift_time: bool = False
    products: tuple[str, ...] | None = None
    channels: tuple[str, ...] | None = None
    rate: float | None = DEFAULT_RATE
    """Simulator frames per second; None = as fast as ingest reads."""
    seed: int = DEFAULT_SEED
    limit: int | None = None
    """Simulator: end the stream after this many frames."""
    faults: Faults | None = None

    def label(self, coinbase_url: str) -> str:
        """What the report and feed health call the source: a server given by URL in place of the exchange
        (`--url` without `--source`) is "url", not "coinbase", so its frames do not pass for the exchange's."""
        return "url" if self.kind == "coinbase" and self.url not in (None, coinbase_url) else self.kind

    @classmethod
    def build(
        cls,
        kind: str,
        *,
        url: str | None = None,
        capture: Path | str | None = None,
        speed: float | str | None = None,
        loop: bool = False,
        shift_time: bool = False,
        products: Sequence[str] | None = None,
        channels: Sequence[str] | None = None,
        rate: float | str | None = None,
        seed: int | None = None,
        limit: int | None = None,
        faults: Faults | None = None,
    ) -> SourceSpec:
        """A validated spec from loosely typed options (CLI strings included). None (False for loop and
        shift_time) is "not given": the source's default (speed 1, rate 100, seed 0); `max` for speed or rate is
        as fast as ingest reads. An option the source would ignore is refused (`refuse_other_sources_options`)."""
        if kind not in get_args(SourceKind):
            raise ConfigError(f"unknown source {kind!r}", hint=f"one of {', '.join(get_args(SourceKind))}")
        if capture is not None and not str(capture).strip():  # it meant the shipped capture without a word
            raise ConfigError("an empty capture path", hint="omit it for the shipped recording, or name a file")
        for what, names in (("products", products), ("channels", channels)):
            if names is not None and not [name for name in names if name.strip()]:  # it meant the defaults
                raise ConfigError(f"an empty selection of {what}", hint="omit it for the source's, or name some")
        refuse_other_sources_options(kind, {"capture": capture, "speed": speed, "loop": loop,
                                            "shift_time": shift_time, "rate": rate, "seed": seed}, url)
        unknown = sorted(set(channels or ()) - CHANNELS)
        if unknown:
            raise ConfigError(f"unknown channel(s) {', '.join(unknown)}", hint=f"one of {', '.join(sorted(CHANNELS))}")
        return cls(
            kind=kind,  # type: ignore[arg-type]
            url=url,
            capture=Path(capture) if capture else SHIPPED_CAPTURE,
            speed=DEFAULT_SPEED if speed is None else parse_speed(speed),
            loop=loop,
            shift_time=shift_time,
            products=tuple(products) if products else None,
            channels=tuple(channels) if channels else None,
            rate=DEFAULT_RATE if rate is None else parse_rate(rate),
            seed=DEFAULT_SEED if seed is None else seed,
            limit=limit,
            faults=faults,
        )


def parse_rate(value: float | str) -> float | None:
    """`max` -> None (as fast as ingest reads); else frames per second above 0."""
    if isinstance(value, str) and value.strip().lower() == "max":
        return None
    try:
        rate = float(value)
    except ValueError:
        rate = 0.0
    if not 0 < rate < float("inf"):
        raise ConfigError(f"invalid simulator rate {value!r}", hint="frames per second above 0, or max")
    return rate


def check_replay_products(spec: SourceSpec) -> None:
    """A replay of a capture (its own server: no `url`) has that capture's products only: others are refused here,
    at once, instead of by the server's "Failed to subscribe" once the ingest runs."""
    if spec.kind != "replay" or spec.url or not spec.products:
        return
    capture = read_capture(spec.capture)
    unknown = [p for p in spec.products if p not in capture.products]
    if unknown:
        raise ConfigError(f"product(s) {', '.join(unknown)} not in the capture {spec.capture.name}",
                          hint=f"it has {', '.join(capture.products)}; or use the simulator, which prices any name")


@dataclass(frozen=True)
class Endpoint:
    url: str
    products: tuple[str, ...]
    channels: tuple[str, ...]
    server: FeedServer | None = None
    """The in-process server, if this process runs one."""

    def subscribe_frame(self) -> str:
        return subscribe_frame(self.products, self.channels)


@asynccontextmanager
async def open_source(spec: SourceSpec) -> AsyncIterator[Endpoint]:
    """The endpoint to connect to, with its in-process server running while inside."""
    if spec.kind == "coinbase":
        yield Endpoint(spec.url or COINBASE_WS_URL, spec.products or LIVE_PRODUCTS, spec.channels or LIVE_CHANNELS)
        return
    if spec.kind == "replay":
        check_replay_products(spec)
        capture = read_capture(spec.capture)
        products, channels = spec.products or capture.products, spec.channels or capture.channels
        server = None if spec.url else replay_server(
            capture, speed=spec.speed, loop=spec.loop, shift_time=spec.shift_time, faults=spec.faults
        )
    else:
        products, channels = spec.products or LIVE_PRODUCTS, spec.channels or LIVE_CHANNELS
        server = None if spec.url else simulator_server(products, rate=spec.rate, seed=spec.seed, limit=spec.limit)
    if server is None:
        yield Endpoint(spec.url or "", products, channels)
        return
    async with server:
        yield Endpoint(server.url, products, channels, server)
