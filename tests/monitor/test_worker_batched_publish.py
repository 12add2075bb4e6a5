"""The worker publishes a batch's ``posts.classified`` records through one batched producer call: every record is
acknowledged by the broker before the batch's offsets can be committed, so a kill -9 anywhere between the produce
and the commit loses nothing and counts nothing twice."""

from __future__ import annotations

import json
import signal

import pytest

from emotion_monitor.servers import free_port
from tests.monitor.conftest import (
    committed_offsets, consume_all, posts_total, prefilled_posts_env, wait_until, written_total,
)
from tests.monitor.posts_data import make_posts

BRANDS = ("acme", "globex", "initech")


# ~60 s on a quiet machine (two worker starts around a kill -9; 137 s at load 8): behind the slow marker CI runs
@pytest.mark.slow
def test_kill_9_between_produce_and_commit_loses_no_classified_record(
        kafka_broker, redis_server, redis_client, small_model_dir, start_worker):
    n = 600
    env = prefilled_posts_env(kafka_broker, redis_server.url, small_model_dir, n, BRANDS)

    def written() -> int:
        return written_total(redis_client, BRANDS)

    def committed() -> int:
        return sum(committed_offsets(kafka_broker).values())

    for _attempt in range(3):  # kill while posts are written and published but their offsets not yet committed
        worker = start_worker({**env, "EM_MONITOR_METRICS_PORT": str(free_port())})
        # some offsets committed (the check below needs them) and more posts written than committed
        wait_until(lambda: 0 < committed() < written(), 150, interval=0.1,
                   what="posts published but not committed", worker=worker)
        worker.signal(signal.SIGKILL)
        worker.wait(10)
        at_kill, offsets = written(), committed_offsets(kafka_broker)
        if at_kill > sum(offsets.values()) > 0:
            break
    else:
        raise AssertionError("three kills all landed right after a commit")
    assert at_kill < n, "the worker finished before it could be killed; raise n"

    # the guarantee itself: every post below a committed offset is on posts.classified (acked before the commit)
    inputs = consume_all(kafka_broker, "posts", n)
    classified = consume_all(kafka_broker, "posts.classified", at_kill)
    published = {json.loads(r.value)["id"] for r in classified}
    committed_ids = {json.loads(r.value)["id"] for r in inputs if r.offset < offsets[r.partition]}
    assert committed_ids, "nothing was committed before the kill; the check would be empty"
    assert committed_ids <= published, f"{len(committed_ids - published)} committed posts never published"

    restarted = start_worker({**env, "EM_MONITOR_METRICS_PORT": str(free_port())})
    wait_until(lambda: committed() >= n, 150, what="all offsets committed", worker=restarted)
    for brand in BRANDS:  # nothing double counted
        assert posts_total(redis_client, brand) == n // 3
    everything = consume_all(kafka_broker, "posts.classified", n + at_kill, timeout=15)
    ids = [json.loads(r.value)["id"] for r in everything]
    assert set(ids) == {p["id"] for p in make_posts(n, BRANDS)}  # no loss on the output topic (at-least-once)
    # partitioned by post id as a send would: the same id always lands in the same partition
    partitions: dict[str, set[int]] = {}
    for record in everything:
        partitions.setdefault(record.key.decode(), set()).add(record.partition)
    assert all(len(p) == 1 for p in partitions.values())
