"""The Coinbase feed: protocol, capture format, websocket client, ingest into Pulsar, replay server, simulator,
recorder.

Entry points for the CLI and notebooks: `run_ingest` (`rtca ingest run`), `serve_replay` (`rtca replay serve`),
`serve_simulator`, `record` (`rtca record`). Modules, along the data flow: protocol, capture, connection, gaps,
sinks, ingest, sources, server (+ book), replay, simulator, recorder, lifecycle; service (background supervision).
"""

from __future__ import annotations

from rtca.feed.capture import SHIPPED_CAPTURE, Capture, read_capture, write_capture
from rtca.feed.ingest import IngestReport, ingest, ingest_to_pulsar, run_ingest
from rtca.feed.protocol import MalformedFrame, Message, parse_frame
from rtca.feed.recorder import RecordReport, record, record_session
from rtca.feed.replay import parse_speed, replay_server, serve_replay
from rtca.feed.server import Faults, FeedServer, ServerStats
from rtca.feed.simulator import serve_simulator, simulator_server
from rtca.feed.sinks import MemorySink, PulsarSink, pulsar_sinks
from rtca.feed.sources import SourceSpec

__all__ = [
    "SHIPPED_CAPTURE",
    "Capture",
    "Faults",
    "FeedServer",
    "IngestReport",
    "MalformedFrame",
    "MemorySink",
    "Message",
    "PulsarSink",
    "RecordReport",
    "ServerStats",
    "SourceSpec",
    "ingest",
    "ingest_to_pulsar",
    "parse_frame",
    "parse_speed",
    "pulsar_sinks",
    "read_capture",
    "record",
    "record_session",
    "replay_server",
    "run_ingest",
    "serve_replay",
    "serve_simulator",
    "simulator_server",
    "write_capture",
]
