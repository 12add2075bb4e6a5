"""The input model: every accepted shape, every rejection reason, truncation and brand normalisation."""

from __future__ import annotations

import base64
import json

import pytest

from monitor.post import MAX_TEXT_CHARS, PostRejected, normalise_brand, parse_post, rejection_envelope


def raw(obj) -> bytes:
    return json.dumps(obj).encode()


def test_minimal_post_takes_record_timestamp_and_normalises_brand():
    post = parse_post(raw({"id": "p1", "brand": "  Acme   Corp ", "text": "love it"}), 1_700_000_000_000)
    assert post.id == "p1"
    assert post.brands == ["acme corp"]
    assert post.created_at == 1_700_000_000_000


def test_brands_list_is_deduplicated_after_normalisation():
    post = parse_post(raw({"id": "p", "brands": ["Acme", "acme ", "H&M"], "text": "x"}), 0)
    assert post.brands == ["acme", "h&m"]


@pytest.mark.parametrize(
    "created_at, expected",
    [
        ("2026-11-26T01:00:00Z", 1_795_654_800_000),
        ("2026-11-26T02:00:00+01:00", 1_795_654_800_000),
        ("2026-11-26T01:00:00", 1_795_654_800_000),  # naive = UTC
        (1_795_654_800_000, 1_795_654_800_000),
        ("1795654800000", 1_795_654_800_000),
    ],
)
def test_created_at_iso_or_epoch_ms(created_at, expected):
    assert parse_post(raw({"id": "p", "brand": "a", "text": "x", "created_at": created_at}), 5).created_at == expected


def test_long_text_is_truncated_never_rejected():
    post = parse_post(raw({"id": "p", "brand": "a", "text": "é" * (MAX_TEXT_CHARS * 3)}), 0)
    assert len(post.text) == MAX_TEXT_CHARS


def test_optional_fields_kept_and_unknown_ignored():
    post = parse_post(raw({"id": "p", "brand": "a", "text": "x", "source": "tw", "lang": "en", "author": "z", "foo": 1}), 0)
    assert (post.source, post.lang, post.author) == ("tw", "en", "z")
    assert "foo" not in post.to_dict()


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b"{not json", "not_json"),
        (b"\xff\x00\xfe", "not_json"),
        (b"[1, 2]", "not_object"),
        (raw({"brand": "a", "text": "x"}), "missing_field"),
        (raw({"id": "p", "text": "x"}), "missing_field"),
        (raw({"id": "p", "brand": "a"}), "missing_field"),
        (raw({"id": 7, "brand": "a", "text": "x"}), "wrong_type"),
        (raw({"id": "p", "brand": "a", "text": ["x"]}), "wrong_type"),
        (raw({"id": "p", "brand": 3, "text": "x"}), "wrong_type"),
        (raw({"id": "p", "brands": {"a": 1}, "text": "x"}), "wrong_type"),
        (raw({"id": "p", "brand": "a", "text": "x", "created_at": True}), "wrong_type"),
        (raw({"id": "p", "brand": "a", "text": "x", "created_at": "yesterday"}), "invalid_value"),
        (raw({"id": "p", "brand": "a=b", "text": "x"}), "invalid_value"),
        (raw({"id": "p", "brand": "a,b", "text": "x"}), "invalid_value"),
        (raw({"id": "p", "brand": "a:b", "text": "x"}), "invalid_value"),
        (raw({"id": "p", "brand": "   ", "text": "x"}), "invalid_value"),
        (raw({"id": "", "brand": "a", "text": "x"}), "invalid_value"),
        (raw({"id": "p", "brands": [], "text": "x"}), "invalid_value"),
        (raw({"id": "p", "brand": "a", "text": "x", "pad": "y" * 300_000}), "oversize"),
    ],
)
def test_rejections_carry_a_reason(payload, reason):
    with pytest.raises(PostRejected) as info:
        parse_post(payload, 0)
    assert info.value.reason == reason
    assert info.value.detail


def test_rejection_envelope_keeps_original_bytes():
    payload = b"\xff{broken"
    with pytest.raises(PostRejected) as info:
        parse_post(payload, 0)
    envelope = json.loads(rejection_envelope(payload, info.value, topic="posts", partition=2, offset=9))
    assert envelope["reason"] == "not_json"
    assert base64.b64decode(envelope["original_b64"]) == payload
    assert (envelope["source_topic"], envelope["source_partition"], envelope["source_offset"]) == ("posts", 2, 9)


def test_brand_normaliser_accepts_common_names_and_rejects_filter_breakers():
    assert normalise_brand("Coca-Cola") == "coca-cola"
    assert normalise_brand("Ben & Jerry's") == "ben & jerry's"
    assert normalise_brand("Café") == "café"
    for bad in ("a(b)", 'a"b', "a!b", "a{b}", "a*b", "a\tb\x00"):
        with pytest.raises(ValueError):
            normalise_brand(bad)


POST_HEAD = b'{"id": "p", "brand": "a", "text": "x", '


@pytest.mark.parametrize(
    "payload, reason",
    [
        (POST_HEAD + b'"created_at": Infinity}', "invalid_value"),  # json.loads accepts it; int() overflowed
        (POST_HEAD + b'"created_at": -Infinity}', "invalid_value"),
        (POST_HEAD + b'"created_at": NaN}', "invalid_value"),
        (POST_HEAD + b'"created_at": 1e400}', "invalid_value"),  # parses as inf
        (POST_HEAD + b'"created_at": ' + b"9" * 5000 + b"}", "not_json"),  # over Python's int digit limit
        (POST_HEAD + b'"deep": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "not_json"),  # RecursionError
        (b'{"id": "p", "brand": "a", "text": "\\ud800 lone surrogate"}', "invalid_value"),
        (b'{"id": "p", "brand": "a", "text": "x", "author": "\\udfff"}', "invalid_value"),
        (b'{"id": "\\udc00", "brand": "a", "text": "x"}', "invalid_value"),
        (b'{"id": "p", "brand": "a", "text": "\xed\xa0\x80"}', "invalid_value"),  # a surrogate as UTF-8 bytes
    ],
)
def test_hostile_values_are_rejections_never_other_exceptions(payload, reason):
    with pytest.raises(PostRejected) as info:
        parse_post(payload, 0, max_bytes=1_000_000)
    assert info.value.reason == reason
    assert info.value.detail


@pytest.mark.parametrize("payload", [
    b"x" * 450_000,  # a 450 KB record: base64 + text made a 1.05 MB envelope, over the producer's limit
    b'{"id": "c", "brand": "a", "text": "' + b"\x01" * 200_000 + b'"}',  # each \x01 is 6 characters in JSON
])
def test_rejection_envelope_is_bounded_and_describes_the_whole_original(payload):
    import hashlib

    from monitor.post import MAX_ENVELOPE_BYTES

    with pytest.raises(PostRejected) as info:
        parse_post(payload, 0)
    envelope_bytes = rejection_envelope(payload, info.value, topic="posts", partition=0, offset=3)
    assert len(envelope_bytes) <= MAX_ENVELOPE_BYTES
    envelope = json.loads(envelope_bytes)
    assert envelope["original_truncated"] is True and "original_text" not in envelope
    assert envelope["original_size"] == len(payload)
    assert envelope["original_sha256"] == hashlib.sha256(payload).hexdigest()
    prefix = base64.b64decode(envelope["original_b64"])
    assert len(prefix) > 100_000 and payload.startswith(prefix)


def test_small_rejection_envelope_is_whole():
    payload = b"{broken"
    envelope = json.loads(rejection_envelope(payload, PostRejected("not_json", "x")))
    assert envelope["original_truncated"] is False and envelope["original_text"] == "{broken"
    assert base64.b64decode(envelope["original_b64"]) == payload and envelope["original_size"] == 7


PARSER_CASES = [
    raw({"id": "p1", "brand": "Acme", "text": "caf\u00e9 \U0001f600 \"quoted\" \\ back"}),
    raw({"id": "p2", "brands": ["Acme", "acme", "H&M"], "text": "x", "created_at": 1.7e12, "lang": "en"}),
    b'{"id": "p3", "brand": "acme", "text": "first", "text": "last wins"}',
    b'{"id": "p4", "brand": "acme", "text": "x", "created_at": NaN}',
    b'{"id": "p5", "brand": "acme", "text": "lone \\ud800 surrogate"}',
    b'\xef\xbb\xbf{"id": "p6", "brand": "acme", "text": "utf-8 bom"}',
    '{"id": "p7", "brand": "acme", "text": "utf-16"}'.encode("utf-16"),
    b'{"id": "p8", "brand": "acme", "text": "x", "created_at": ' + b"1" * 30 + b"}",
    b'{"id": "p9", "brand": "acme", "text": "x", "created_at": 1e400}',
    b'{"id": "p10", "brands": ["acme", ["nested"]], "text": "x"}',
    b'{"id": "p11", "brands": ["acme", "a=b"], "text": "x"}',
    b'{"id": "p12", "brands": ["acme", 7], "text": "x"}',
    b"[" * 2000 + b"]" * 2000,
    b'{"id": "p14", "brand": "acme", "text": "x", "created_at": 18446744073709551615}',
    b'{"id": "p15", "brands": [100000000000000000000], "text": "x"}',
    b"null",
    b'{"id": "p13", "brand": "acme", "text": "x"} trailing',
]


def outcome(payload: bytes):
    try:
        return parse_post(payload, 1_000).model_dump()
    except PostRejected as exc:
        return (exc.reason, exc.detail)


def test_the_fast_json_path_parses_and_rejects_exactly_as_the_standard_parser(monkeypatch):
    """orjson parses what it accepts; whatever it refuses gets json's verdict: the same posts, reasons and details as
    parsing with json alone (twice each: the cached brand lists give the same answers, refusals included)."""
    import orjson

    import monitor.post as post_module

    fast = [outcome(p) for p in PARSER_CASES] + [outcome(p) for p in PARSER_CASES]

    def refuse(_raw):
        raise orjson.JSONDecodeError("forced", "", 0)

    monkeypatch.setattr(post_module.orjson, "loads", refuse)
    standard = [outcome(p) for p in PARSER_CASES] * 2
    assert fast == standard
    assert fast[1]["brands"] == ["acme", "h&m"] and fast[2]["text"] == "last wins"
    assert {o[0] for o in fast if isinstance(o, tuple)} >= {"not_json", "invalid_value", "wrong_type"}
