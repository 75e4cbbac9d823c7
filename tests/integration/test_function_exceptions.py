"""`rtca functions status` shows a function's latest exceptions: read from the real functions worker, not from a
mocked admin API. A tiny function of the test's own (its own name and topics) raises on one marker message."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pulsar
import pytest

from rtca.functions.deploy import FunctionSpec, delete_functions, deploy, function_status
from rtca.settings import Settings

from cleanup import drop_topics
from waiting import wait_for

pytestmark = pytest.mark.stack

FUNCTION_FILE = Path(__file__).with_name("raise_on_marker_function.py")


@dataclass(frozen=True)
class FileFunctionSpec(FunctionSpec):
    """A function whose code is one file outside `rtca`: uploaded under its own name, so the instance imports it
    as a top-level module."""

    @property
    def source_file(self) -> Path:
        return FUNCTION_FILE

    @property
    def upload_name(self) -> str:
        return FUNCTION_FILE.name


def test_functions_status_shows_the_exception_a_function_raised(stack: Settings) -> None:
    tag = uuid.uuid4().hex[:8]
    source, sink = stack.topic(f"it-{tag}-raise-in"), stack.topic(f"it-{tag}-raise-out")
    name = f"it-{tag}-raise"
    spec = FileFunctionSpec(name=name, module=FUNCTION_FILE.stem, class_name="RaiseOnMarker", inputs=(source,),
                            output=sink, processing_guarantees="ATLEAST_ONCE")  # fmt: skip
    client = pulsar.Client(stack.pulsar.service_url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Warn))
    try:
        began = time.monotonic()
        deploy(stack, [spec])
        deployed = time.monotonic() - began
        assert function_status(stack, [name], known_only=False)[0].latest_exceptions == ()
        producer = client.create_producer(source)
        producer.send(b"an ordinary input")
        producer.send(b"rtca-test-raise:" + tag.encode())
        wanted = f"marker input seen: {tag}"
        wait_for(lambda: any(wanted in text for text in function_status(stack, [name], known_only=False)[0]
                             .latest_exceptions), timeout=60, what="the exception in the function's status")
        status = function_status(stack, [name], known_only=False)[0]
        print(f"deployed in {deployed:.1f} s; {status}")
        assert status.failed >= 1 and status.processed >= 1
        assert f"exception: {status.latest_exceptions[0]}" in str(status)  # what `rtca functions status` prints
    finally:
        client.close()
        delete_functions(stack, [name], known_only=False)
        wait_for(lambda: not function_status(stack, [name], known_only=False)[0].deployed, timeout=60,
                 what="the function to be deleted")  # fmt: skip
        drop_topics(stack, [source, sink])
