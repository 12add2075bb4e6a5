"""The demo source's pure logic: arrival rate, day pattern, the anger spike, and that its posts are valid posts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import emotion_monitor
from emotion_monitor.demo import SAMPLE_DIR, DemoSource, day_factor, load_corpus
from emotion_monitor.settings import UpSettings
from monitor.post import parse_post


@pytest.fixture(scope="module")
def corpus(goemotions_dir):
    return load_corpus(goemotions_dir)


def test_corpus_reads_test_split_and_its_anger_subset(goemotions_full_dir):
    corpus = load_corpus(goemotions_full_dir)
    assert len(corpus.texts) == 5427
    assert len(corpus.angry_texts) == 198  # rows whose labels include anger (id 2)
    assert set(corpus.angry_texts) <= set(corpus.texts)


def test_default_corpus_is_the_shipped_sample_with_its_license():
    """No folder given (EM_UP_DEMO_DATA_DIR unset): the sample inside the package, so a bare clone runs the demo."""
    assert UpSettings().demo_data_dir is None
    corpus = load_corpus()
    assert SAMPLE_DIR.is_relative_to(Path(emotion_monitor.__file__).parent)  # installed with the package
    assert len(corpus.texts) == 1800 and len(corpus.angry_texts) == 61  # per the sample's README
    assert set(corpus.angry_texts) <= set(corpus.texts)
    assert "Demszky" in (SAMPLE_DIR / "LICENSE").read_text() and "Apache" in (SAMPLE_DIR / "LICENSE").read_text()
    assert sum(path.stat().st_size for path in SAMPLE_DIR.iterdir()) < 400_000


def test_missing_data_fails_fast_naming_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"emotions\.txt.*EM_UP_DEMO_DATA_DIR"):
        load_corpus(tmp_path)


def test_day_pattern_is_quiet_at_night_and_busy_in_the_afternoon():
    assert day_factor(4) == pytest.approx(0.2)
    assert day_factor(16) == pytest.approx(1.0)
    assert day_factor(10) == pytest.approx(0.6)
    assert all(0.2 - 1e-9 <= day_factor(h / 2) <= 1.0 + 1e-9 for h in range(48))


def test_poisson_rate_brand_shares_and_the_spike(corpus):
    settings = UpSettings(demo_rate=6.0, demo_day_pattern=False, demo_spike_after_s=50, demo_spike_duration_s=30,
                          demo_spike_rate=8.0, demo_spike_brand="velora")
    source = DemoSource(settings, corpus, seed=7)
    before = [post for step in range(500) for post in source.tick(step * 0.1, 1e9 + step * 0.1)]  # 0-50 s
    during = [post for step in range(500, 800) for post in source.tick(step * 0.1, 1e9 + step * 0.1)]  # 50-80 s

    assert 240 <= len(before) <= 360  # 6/s x 50 s = 300, Poisson sd ~17
    assert all(post["source"] == "demo" for post in before)
    counts = {brand: sum(post["brand"] == brand for post in before) for brand in settings.demo_brands}
    assert counts["acme coffee"] > counts["nimbus air"] > counts["velora"] > 0  # Zipf-like shares

    spike = [post for post in during if post["source"] == "demo-spike"]
    assert 180 <= len(spike) <= 300  # 8/s x 30 s = 240
    assert {post["brand"] for post in spike} == {"velora"}
    assert all(post["text"] in set(corpus.angry_texts) for post in spike)
    assert source.spiking(79.9) and not source.spiking(80.1) and not source.spiking(49.9)

    ids = [post["id"] for post in before + during]
    assert len(ids) == len(set(ids))
    for post in (before + during)[:50]:
        assert parse_post(json.dumps(post).encode(), None).brands == [post["brand"]]


def test_repeating_spike_and_day_pattern_scaling(corpus):
    settings = UpSettings(demo_spike_after_s=10, demo_spike_duration_s=5, demo_spike_every_s=60, demo_rate=10)
    source = DemoSource(settings, corpus, seed=1)
    assert source.spiking(12) and not source.spiking(20) and source.spiking(71) and not source.spiking(76)
    # a wall time at 04:00 local gets a fifth of the peak rate
    import time

    four_am = time.mktime((2026, 11, 25, 4, 0, 0, 0, 0, -1))
    assert source.rate_now(four_am) == pytest.approx(2.0)


def test_a_failed_delivery_is_counted_and_logged(corpus, caplog):
    import asyncio

    source = DemoSource(UpSettings(), corpus, seed=1)
    loop = asyncio.new_event_loop()
    try:
        failed, delivered = loop.create_future(), loop.create_future()
        failed.set_exception(RuntimeError("broker said no"))
        delivered.set_result(None)
        with caplog.at_level("WARNING", logger="emotion_monitor.demo"):
            source._note_delivery(failed)
            source._note_delivery(delivered)
    finally:
        loop.close()
    assert source.failed == 1
    assert "not delivered: broker said no" in caplog.text
