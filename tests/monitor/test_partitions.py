"""The batched key partitioning picks exactly the partition aiokafka's default partitioner picks, key by key."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner, murmur2

from monitor import partitions


def test_murmur2_and_partitions_match_aiokafka_for_every_key_length():
    rng = random.Random(5)
    keys = [bytes(rng.randrange(256) for _ in range(n)) for n in range(0, 70) for _ in range(6)]
    keys += [f"at://did:plc:{i}/app.bsky.feed.post/{i * 7919}".encode() for i in range(300)]
    keys += ["é🙂".encode() * 3, b"\xff" * 9, b"\x00" * 5]
    rng.shuffle(keys)
    assert partitions.murmur2(keys).tolist() == [murmur2(k) & 0xFFFFFFFF for k in keys]
    for all_partitions in ([0], [0, 1, 2, 3], list(range(7)), [0, 2, 5]):
        expected = [DefaultPartitioner()(k, all_partitions, all_partitions) for k in keys]
        assert partitions.partitions_for_keys(keys, all_partitions) == expected
    assert partitions.partitions_for_keys([], [0, 1]) == []
