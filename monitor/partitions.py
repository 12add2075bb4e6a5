"""Kafka's default key partitioning (murmur2 of the key, as the Java client and aiokafka's ``DefaultPartitioner``),
for a whole batch of keys at once.

Why: the worker publishes each micro-batch's ``posts.classified`` records in one call (:mod:`monitor.app`), and
asking the producer for each record's partition — aiokafka's pure-Python murmur2 plus two metadata look-ups per
record — cost ~6 % of the worker's time per post (``bench/throughput.py --model null``). Here the hash runs over the
batch in numpy: the same partition for every key (``tests/monitor/test_partitions.py`` checks it against aiokafka).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["murmur2", "partitions_for_keys"]

_SEED = np.uint32(0x9747B28C)
_M = np.uint32(0x5BD1E995)


def murmur2(keys: Sequence[bytes]) -> np.ndarray:
    """Kafka's murmur2 (unsigned 32 bits) of each key."""
    count = len(keys)
    lengths = np.fromiter(map(len, keys), dtype=np.int64, count=count)
    width = max(4, int(lengths.max(initial=0) + 3) // 4 * 4)
    data = np.zeros((count, width), dtype=np.uint8)
    flat = np.frombuffer(b"".join(keys), dtype=np.uint8)
    if flat.size:  # each key's bytes at the start of its row, zeros after
        starts = np.cumsum(lengths) - lengths
        data[np.repeat(np.arange(count), lengths), np.arange(flat.size) - np.repeat(starts, lengths)] = flat
    words = data.view("<u4")
    blocks = lengths // 4
    h = _SEED ^ lengths.astype(np.uint32)
    for i in range(words.shape[1]):  # uint32 arrays wrap around on overflow, as the Java ints do
        k = words[:, i] * _M
        k ^= k >> np.uint32(24)
        k *= _M
        h = np.where(blocks > i, (h * _M) ^ k, h)
    rows, extra = np.arange(count), lengths % 4
    tail = [data[rows, np.minimum(blocks * 4 + j, width - 1)].astype(np.uint32) for j in range(3)]
    h = np.where(extra >= 3, h ^ (tail[2] << np.uint32(16)), h)
    h = np.where(extra >= 2, h ^ (tail[1] << np.uint32(8)), h)
    h = np.where(extra >= 1, (h ^ tail[0]) * _M, h)
    h ^= h >> np.uint32(13)
    h *= _M
    h ^= h >> np.uint32(15)
    return h


def partitions_for_keys(keys: Sequence[bytes], all_partitions: Sequence[int]) -> list[int]:
    """The partition aiokafka's ``DefaultPartitioner`` picks for each (non-None) key among ``all_partitions``."""
    if not keys:
        return []
    index = (murmur2(keys).astype(np.int64) & 0x7FFFFFFF) % len(all_partitions)
    return np.asarray(all_partitions)[index].tolist()
