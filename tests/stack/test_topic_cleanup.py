"""`delete_topics`, the clean-up of tests and benchmarks: picked topics go (partitioned ones whole), others stay, and
a slow broker is retried until the deadline instead of failing the clean-up (a teardown failed CI that way)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pulsar
import pytest
from fake_http import SlowHandler, serving

from rtca.errors import ServiceError
from rtca.settings import Settings, load_settings
from rtca.stack.pulsar import delete_topics


class SlowAdmin(SlowHandler):
    """Pulsar's admin API for one namespace: lists `topics`, deletes from them."""

    topics: list[str] = []
    deletes: list[str] = []
    delete_ignored = False  # a topic a closing consumer re-creates at once

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.answer(200, list(SlowAdmin.topics))

    def do_DELETE(self) -> None:  # noqa: N802
        path = self.path.split("?")[0]
        SlowAdmin.deletes.append(path)
        name = "persistent://" + path.removeprefix("/admin/v2/persistent/").removesuffix("/partitions")
        if not SlowAdmin.delete_ignored:
            SlowAdmin.topics = [t for t in SlowAdmin.topics if t != name and not t.startswith(f"{name}-partition-")]
        self.answer(204)


@pytest.fixture
def slow_admin(default_env: None) -> Iterator[Settings]:
    SlowAdmin.deletes, SlowAdmin.slow = [], 0
    with serving(SlowAdmin) as url:
        yield load_settings(pulsar={"admin_url_override": url})


def test_timeouts_are_retried_until_the_topics_are_gone(slow_admin: Settings) -> None:
    ns = f"persistent://{slow_admin.pulsar.tenant}/{slow_admin.pulsar.namespace}"
    SlowAdmin.topics = [f"{ns}/it-a", f"{ns}/it-p-partition-0", f"{ns}/it-p-partition-1", f"{ns}/keep"]
    SlowAdmin.slow = 3  # the first three listings time out
    left = delete_topics(slow_admin, lambda t: t.rsplit("/", 1)[-1].startswith("it-"), timeout=30,
                         request_timeout=0.3, interval=0.1)
    assert left == []
    assert SlowAdmin.topics == [f"{ns}/keep"]
    short = f"{slow_admin.pulsar.tenant}/{slow_admin.pulsar.namespace}"
    assert f"/admin/v2/persistent/{short}/it-p/partitions" in SlowAdmin.deletes
    assert f"/admin/v2/persistent/{short}/it-a" in SlowAdmin.deletes


def test_deletes_answered_after_the_timeout_are_checked_by_listing_again(slow_admin: Settings) -> None:
    ns = f"persistent://{slow_admin.pulsar.tenant}/{slow_admin.pulsar.namespace}"
    SlowAdmin.topics = [f"{ns}/it-a", f"{ns}/it-b"]
    # both deletes are done at once but answered late: together they take the client past the deadline
    SlowAdmin.slow, SlowAdmin.slow_method, SlowAdmin.delay = 2, "DELETE", 3.0
    try:
        left = delete_topics(slow_admin, lambda t: "/it-" in t, timeout=1.5, request_timeout=1.0, interval=0.1)
    finally:
        SlowAdmin.slow, SlowAdmin.slow_method, SlowAdmin.delay = 0, None, SlowHandler.delay
    assert len(SlowAdmin.deletes) == 2  # one round (a first listing later than the deadline would delete nothing)
    assert left == [] and SlowAdmin.topics == []  # past the deadline: a fresh listing, not the one before


def test_what_the_broker_keeps_past_the_deadline_is_returned(slow_admin: Settings) -> None:
    ns = f"persistent://{slow_admin.pulsar.tenant}/{slow_admin.pulsar.namespace}"
    SlowAdmin.topics = [f"{ns}/it-a", f"{ns}/keep"]
    SlowAdmin.delete_ignored = True
    try:
        left = delete_topics(slow_admin, lambda t: t.endswith("/it-a"), timeout=1, request_timeout=0.3, interval=0.1)
    finally:
        SlowAdmin.delete_ignored = False
    assert left == [f"{ns}/it-a"]
    assert len(SlowAdmin.deletes) >= 1


def test_a_namespace_never_listed_is_an_error_not_an_empty_list(slow_admin: Settings) -> None:
    SlowAdmin.topics, SlowAdmin.slow = ["persistent://x/y/it-a"], 1_000
    try:
        with pytest.raises(ServiceError, match="could not list the topics"):
            delete_topics(slow_admin, lambda t: True, timeout=1, request_timeout=0.3, interval=0.1)
    finally:
        SlowAdmin.slow = 0


@pytest.mark.stack
def test_picked_topics_are_deleted_on_the_stack_and_the_others_kept(stack_up: Settings, unique: str,
                                                                   request: pytest.FixtureRequest) -> None:
    plain, parted, kept = (stack_up.topic(f"cleanup-{unique}-{n}") for n in ("plain", "parted", "kept"))
    admin = httpx.Client(base_url=stack_up.pulsar.admin_url, timeout=30)
    request.addfinalizer(admin.close)
    admin.put(f"/admin/v2/{parted.replace('://', '/', 1)}/partitions", json=2).raise_for_status()
    client = pulsar.Client(stack_up.pulsar.service_url, operation_timeout_seconds=30)
    try:
        for topic in (plain, parted, kept):
            client.create_producer(topic).send(b"x")
    finally:
        client.close()

    def listed() -> set[str]:
        ns = f"/admin/v2/persistent/{stack_up.pulsar.tenant}/{stack_up.pulsar.namespace}"
        return {t for t in admin.get(ns).raise_for_status().json() if f"cleanup-{unique}-" in t}

    assert {f"{parted}-partition-0", f"{parted}-partition-1", plain, kept} <= listed()
    assert delete_topics(stack_up, {plain, parted}.__contains__) == []
    assert listed() == {kept}
    assert admin.get(f"/admin/v2/{parted.replace('://', '/', 1)}/partitions").status_code == 404  # metadata too
    assert delete_topics(stack_up, {kept}.__contains__) == []
    assert listed() == set()
