"""The stack end to end: Pulsar -> our Pinot plugin -> Pinot, Superset over Pinot, a function on our virtualenv."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import orjson
import pulsar
import pytest

from rtca.errors import DeployError
from rtca.pinot.client import PinotClient, stream_configs
from rtca.settings import Settings
from rtca.stack import pinot as pinot_stack
from rtca.stack.process import Supervisor
from rtca.superset.client import SupersetClient
from waiting import wait_for

pytestmark = pytest.mark.stack


def schema(name: str) -> dict[str, object]:
    return {
        "schemaName": name,
        "dimensionFieldSpecs": [{"name": "id", "dataType": "LONG"}, {"name": "product", "dataType": "STRING"}],
        "metricFieldSpecs": [{"name": "price", "dataType": "DOUBLE"}],
        "dateTimeFieldSpecs": [{"name": "event_time", "dataType": "TIMESTAMP", "format": "1:MILLISECONDS:EPOCH",
                                "granularity": "1:MILLISECONDS"}],
    }


def table(settings: Settings, name: str, topic: str, *, offset_reset: str, flush_rows: int) -> dict[str, object]:
    return {
        "tableName": name,
        "tableType": "REALTIME",
        "segmentsConfig": {"timeColumnName": "event_time", "schemaName": name, "replicasPerPartition": "1"},
        "tenants": {},
        "tableIndexConfig": {"loadMode": "MMAP",
                             "streamConfigs": stream_configs(settings, topic, offset_reset=offset_reset,
                                                             flush_rows=flush_rows)},
        "metadata": {},
    }


@pytest.fixture
def pinot(stack_up: Settings) -> Iterator[PinotClient]:
    with PinotClient(stack_up) as client:
        yield client


@pytest.fixture
def pulsar_client(stack_up: Settings) -> Iterator[pulsar.Client]:
    client = pulsar.Client(stack_up.pulsar.service_url, operation_timeout_seconds=30)
    yield client
    client.close()


@pytest.fixture
def make_table(stack_up: Settings, pinot: PinotClient) -> Iterator[Callable[..., str]]:
    created: list[str] = []

    def make(name: str, topic: str, *, offset_reset: str = "smallest", flush_rows: int = 5_000) -> str:
        pinot.put_schema(schema(name))
        pinot.put_table(table(stack_up, name, topic, offset_reset=offset_reset, flush_rows=flush_rows))
        created.append(name)
        return name

    yield make
    for name in created:
        pinot.delete_table(name)


def produce(client: pulsar.Client, topic: str, ids: range, product: str = "SMOKE-USD") -> None:
    producer = client.create_producer(topic, batching_enabled=True, batching_max_publish_delay_ms=5,
                                      block_if_queue_full=True)
    now = int(time.time() * 1000)
    for i in ids:
        producer.send_async(orjson.dumps({"id": i, "product": product, "price": 100.0 + i, "event_time": now + i}),
                            None)
    producer.flush()
    producer.close()


def test_pinot_consumes_exactly_once_across_commits_and_server_restart(
        stack_up: Settings, pinot: PinotClient, pulsar_client: pulsar.Client, make_table: Callable[..., str],
        unique: str) -> None:
    topic = stack_up.topic(f"smoke-{unique}")
    name = make_table(f"smoke_{unique}", topic, flush_rows=5_000)
    produce(pulsar_client, topic, range(20_000))

    wait_for(lambda: _count_or_zero(pinot, name) >= 20_000, timeout=180, what="20,000 rows in Pinot")
    assert pinot.count(name) == 20_000
    assert pinot.query(f"SELECT COUNT(DISTINCT id) FROM {name}")[0][0] == 20_000
    wait_for(lambda: pinot.committed_segments(name) >= 1, timeout=120, what="a committed segment")
    committed = pinot.committed_segments(name)
    print(f"sent 20000, counted {pinot.count(name)}, committed segments {committed}")

    supervisor = Supervisor(stack_up)
    server = next(s for s in pinot_stack.services(stack_up) if s.name == "pinot-server")
    supervisor.restart(server, timeout=stack_up.start_timeout)
    wait_for(lambda: _count_or_zero(pinot, name) >= 20_000, timeout=180, what="rows back after the restart")
    time.sleep(3)  # a duplicate re-read would show up within the next consumption round
    assert pinot.count(name) == 20_000

    produce(pulsar_client, topic, range(20_000, 20_500))
    wait_for(lambda: pinot.count(name) >= 20_500, timeout=120, what="messages sent after the restart")
    assert pinot.count(name) == 20_500
    assert pinot.query(f"SELECT COUNT(DISTINCT id) FROM {name}")[0][0] == 20_500
    print(f"after server restart: {pinot.count(name)} rows, all distinct")


def _count_or_zero(pinot: PinotClient, name: str) -> int:
    try:
        return pinot.count(name)
    except DeployError:  # a new table or a reloading server: the broker answers with an error for a moment
        return 0


def test_partitioned_topic_and_largest_offset(stack_up: Settings, pinot: PinotClient,
                                              pulsar_client: pulsar.Client, make_table: Callable[..., str],
                                              unique: str) -> None:
    import httpx

    topic = stack_up.topic(f"smoke-parts-{unique}")
    short = topic.removeprefix("persistent://")
    httpx.put(f"{stack_up.pulsar.admin_url}/admin/v2/persistent/{short}/partitions", json=2,
              timeout=30).raise_for_status()
    produce(pulsar_client, topic, range(1_000), product="BEFORE")  # before the table: skipped by `largest`
    whole = make_table(f"smoke_parts_{unique}", topic, offset_reset="smallest", flush_rows=400)
    latest = make_table(f"smoke_latest_{unique}", topic, offset_reset="largest")
    wait_for(lambda: _count_or_zero(pinot, whole) >= 1_000, timeout=120, what="1,000 rows from 2 partitions")
    time.sleep(2)
    produce(pulsar_client, topic, range(1_000, 1_600), product="AFTER")
    wait_for(lambda: pinot.count(whole) >= 1_600 and pinot.count(latest) >= 600, timeout=120,
             what="rows sent after the tables started")
    assert pinot.count(whole) == 1_600
    assert pinot.query(f"SELECT COUNT(DISTINCT id) FROM {whole}")[0][0] == 1_600
    assert pinot.count(latest) == 600
    assert pinot.count(latest, "WHERE product = 'BEFORE'") == 0
    print(f"2 partitions: smallest {pinot.count(whole)} rows, largest {pinot.count(latest)} rows")


def test_superset_queries_pinot(stack_up: Settings, pinot: PinotClient, pulsar_client: pulsar.Client,
                                make_table: Callable[..., str], unique: str) -> None:
    topic = stack_up.topic(f"smoke-superset-{unique}")
    name = make_table(f"smoke_superset_{unique}", topic)
    produce(pulsar_client, topic, range(10))
    wait_for(lambda: _count_or_zero(pinot, name) >= 10, timeout=120, what="10 rows in Pinot")
    with SupersetClient.from_settings(stack_up) as superset:
        database_id = superset.database_id(stack_up.superset.database_name)
        assert database_id is not None
        rows = superset.sql(database_id, f"SELECT COUNT(*) AS n, MAX(id) AS top FROM {name}")
    assert rows == [{"n": 10, "top": 9}]


def test_function_on_the_project_virtualenv_processes_a_message(stack_up: Settings, pulsar_client: pulsar.Client,
                                                                 unique: str) -> None:
    """The worker runs Python functions with the project's virtualenv: a class from `rtca` loads and runs."""
    from rtca.functions.deploy import delete_functions, deploy, identity_spec

    source, sink = stack_up.topic(f"smoke-fn-in-{unique}"), stack_up.topic(f"smoke-fn-out-{unique}")
    name = f"smoke-identity-{unique}"
    consumer = pulsar_client.subscribe(sink, "smoke", initial_position=pulsar.InitialPosition.Earliest)
    try:
        deploy(stack_up, [identity_spec(name, source, sink)])
        pulsar_client.create_producer(source).send(b"hello from the smoke test")
        message = consumer.receive(timeout_millis=60_000)
        assert message.data() == b"hello from the smoke test"
    finally:
        consumer.close()
        delete_functions(stack_up, [name], known_only=False)


def test_the_namespace_keeps_the_configured_retention(stack_up: Settings) -> None:
    """Unlimited retention filled the disk with a live feed's gigabytes a day; too short a one would lose what a
    Pinot reader (not a subscription) has not read yet."""
    import httpx

    p = stack_up.pulsar
    policy = httpx.get(f"{p.admin_url}/admin/v2/namespaces/{p.tenant}/{p.namespace}/retention", timeout=30).json()
    assert policy == {"retentionTimeInMinutes": p.retention_minutes, "retentionSizeInMB": p.retention_mb}
    assert p.retention_minutes == 7 * 24 * 60  # the default: as long as Pinot's tables keep their rows


def test_a_namespace_the_stack_creates_never_deletes_an_inactive_topic(stack_up: Settings, unique: str) -> None:
    """Pulsar standalone deletes a topic without subscriptions after about a minute, and Pinot's reader is not a
    subscription. Checked on the stack's namespace and on a fresh one made by the same call (`rtca up` on a new
    stack), so the check does not rest on a policy some earlier run set."""
    import httpx

    from rtca.stack import pulsar as pulsar_stack

    p = stack_up.pulsar
    fresh = stack_up.model_copy(update={"pulsar": p.model_copy(update={"namespace": f"smoke-ns-{unique}"})})
    try:
        pulsar_stack.ensure_namespace(fresh)
        for namespace in (p.namespace, fresh.pulsar.namespace):
            base = f"{p.admin_url}/admin/v2/namespaces/{p.tenant}/{namespace}"
            answer = httpx.get(f"{base}/inactiveTopicPolicies", timeout=30)
            policy = answer.json() if answer.content else None  # none set: an empty answer (the broker's default)
            print(namespace, policy)
            assert policy is not None and policy.get("deleteWhileInactive") is False, (namespace, policy)
            retention = httpx.get(f"{base}/retention", timeout=30).json()
            assert retention == {"retentionTimeInMinutes": p.retention_minutes, "retentionSizeInMB": p.retention_mb}
    finally:
        httpx.delete(f"{p.admin_url}/admin/v2/namespaces/{p.tenant}/{fresh.pulsar.namespace}", timeout=30)


def test_a_changed_retention_reaches_a_running_stack_through_up_and_deploy(stack_up: Settings) -> None:
    """The README promises that `rtca up` and `rtca deploy` set a changed retention on an existing namespace (to
    bound a live feed's disk, say); both used to return early on a running local stack and leave the old policy."""
    import httpx

    from rtca import stack

    p = stack_up.pulsar
    url = f"{p.admin_url}/admin/v2/namespaces/{p.tenant}/{p.namespace}/retention"

    def with_retention(minutes: int) -> Settings:
        return stack_up.model_copy(update={"pulsar": p.model_copy(update={"retention_minutes": minutes})})

    try:
        stack.up(with_retention(p.retention_minutes + 1))  # longer, so nothing another test wrote goes meanwhile
        assert httpx.get(url, timeout=30).json()["retentionTimeInMinutes"] == p.retention_minutes + 1
        stack.prepare(with_retention(p.retention_minutes + 2))  # `rtca deploy`'s first step
        assert httpx.get(url, timeout=30).json()["retentionTimeInMinutes"] == p.retention_minutes + 2
    finally:
        stack.prepare(stack_up)
    assert httpx.get(url, timeout=30).json()["retentionTimeInMinutes"] == p.retention_minutes
