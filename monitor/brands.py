"""Brand queries: which brands an untagged post is about, decided at ingest from the brand registry.

A **brand query** names a brand (its series name, normalised like a post's ``brand``) and lists terms: the post
matches when it contains any of ``any`` and none of ``none``, and (if ``langs`` is given) its ``lang`` is one of them.

Matching rules (one normalisation, :func:`tokens`, applied to the text and to every term, so both sides agree):

* whole words and phrases only: "acme" does not match "acmeville"; a phrase matches its words in order, whatever
  whitespace, punctuation or emoji lies between them ("acme coffee" matches "ACME-Coffee!!");
* case- and accent-insensitive ("Café" = "cafe"; NFKD, combining marks dropped, case-folded);
* ``#tag`` and ``@handle``: a term written with ``#`` or ``@`` matches only that form; a plain term also matches the
  word written as a hashtag or handle ("acme" matches "#Acme" and "@acme"; "#acme" does not match "acme");
  an ``@`` inside a word is part of that word (an e-mail address "info@acme" matches neither "acme" nor "@acme");
* possessives: "Acme's" (straight or curly apostrophe) counts as "acme";
* ``none`` terms follow the same rules and veto the brand for that post.

Words are runs of letters, digits and ``_`` (plus ``#``/``@`` signs and inner apostrophes: "o'reilly"); scripts
written without spaces (Chinese, Japanese, Thai) therefore match only as whole runs.

All terms of all brands go into one Aho-Corasick automaton (``pyahocorasick``): one pass over the normalised text
finds every term, however many brands there are. The text is normalised (:func:`canonical`) to its words joined by
single spaces with a space at each end, and each term is stored as its words the same way (plus its #, @ and 's
forms), so an automaton hit is always a whole-word (or whole-phrase) hit.

The registry lives in Redis (keys in :mod:`monitor.schema`): ``em:brand_queries`` (hash: name -> query JSON) and
``em:brand_queries:version`` (a counter bumped by every change, in the same transaction). Workers
(:class:`LiveMatcher`) compare the version at most every ``EM_MONITOR_BRAND_RELOAD_SECONDS`` and rebuild their
automaton when it moved, so a change reaches running workers within seconds, without a restart.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import ahocorasick
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from monitor import schema
from monitor.post import MAX_BRANDS, Post, normalise_brand

__all__ = [
    "BrandQuery",
    "IngestMatching",
    "LiveMatcher",
    "Match",
    "assign",
    "canonical",
    "Matcher",
    "RegistryError",
    "dump_yaml",
    "load_yaml",
    "normalise_text",
    "read_registry",
    "registry_version",
    "remove_query",
    "replace_registry",
    "tokens",
    "upsert_queries",
]

log = logging.getLogger(__name__)

MAX_TERMS = 1000
MAX_TERM_CHARS = 200

# Text -> words: runs of anything but word characters, # @ and ' become one space. A quote that is not inside a word
# ('acme') is a separator too; that slower pattern is used only when the text has an apostrophe at all.
_SEPARATORS = re.compile(r"[^\w#@']+")
_SEPARATORS_QUOTES = re.compile(r"(?:[^\w#@']|(?<!\w)'|'(?!\w))+")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u02bc": "'", "\u2018": "'", "\uff07": "'"})
_WORD = re.compile(r"\w")


class RegistryError(ValueError):
    """A brand query or registry file that is not valid; the message says which brand and what is wrong."""


def normalise_text(text: str) -> str:
    """Case-fold, drop accents and unify apostrophes (the character-level part of matching)."""
    if text.isascii():
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text.translate(_APOSTROPHES))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def canonical(text: str) -> str:
    """The text as the automaton reads it: normalised words joined by single spaces, a space at each end."""
    text = normalise_text(text)
    return " " + (_SEPARATORS_QUOTES if "'" in text else _SEPARATORS).sub(" ", text) + " "


def tokens(text: str) -> list[str]:
    """The words of ``text`` as matching sees them (a ``#tag``/``@handle`` keeps its sign; "acme's" stays whole)."""
    return canonical(text).split()


def _term_words(term: str) -> list[str]:
    """A query term's words, a trailing possessive dropped (the text side accepts it with or without)."""
    words = tokens(term)
    if words and words[-1].endswith("'s") and len(words[-1]) > 2:
        words[-1] = words[-1][:-2]
    return words


def _keys(words: Sequence[str]) -> list[tuple[str, bool]]:
    """Every automaton key a term stands for. Why variants instead of normalising the text further: one regex pass
    over the text is the hot path, so the forms a term may take in a text (#tag, @handle, possessive) are spelled
    out once per term here: a plain first word also as #word / @word, the last word also with 's. The flag says
    whether the key keeps the term's own first word (so "#acme" found in a text is credited to a "#acme" term
    rather than to a plain "acme" term of the same brand)."""
    firsts = [words[0]] if words[0][0] in "#@" else [words[0], "#" + words[0], "@" + words[0]]
    keys = []
    for first in firsts:
        for last_suffix in ("", "'s"):
            body = [first, *words[1:]]
            body[-1] = body[-1] + last_suffix
            keys.append((" " + " ".join(body) + " ", first == words[0]))
    return keys


def _lang(value: str | None) -> str | None:
    """Primary language subtag, lower-case: "en-US" -> "en"."""
    return value.strip().lower().replace("_", "-").split("-")[0] if value and value.strip() else None


class BrandQuery(BaseModel):
    """One brand's query, as in the registry file: ``name``, ``any`` (required), ``none``, ``langs`` (optional)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="The brand's series name (normalised like a post's brand)")
    any: list[str] = Field(min_length=1, max_length=MAX_TERMS, description="A post matches if it has any of these")
    none: list[str] = Field(default_factory=list, max_length=MAX_TERMS, description="...and none of these")
    langs: list[str] = Field(default_factory=list, description="Only posts in these languages (empty: any)")

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: Any) -> str:
        return normalise_brand(value)

    @field_validator("any", "none", mode="before")
    @classmethod
    def _terms(cls, value: Any) -> list[str]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise ValueError(f"must be a list of strings, got {type(value).__name__}")
        terms = []
        for term in value:
            if not isinstance(term, str):
                raise ValueError(f"terms must be strings, got {term!r}")
            term = " ".join(term.split())
            if len(term) > MAX_TERM_CHARS:
                raise ValueError(f"term {term[:20]!r}... is longer than {MAX_TERM_CHARS} characters")
            words = _term_words(term)
            if not words or not all(_WORD.search(w) for w in words):
                raise ValueError(f"term {term!r} has no word to match (letters or digits)")
            terms.append(term)
        return list(dict.fromkeys(terms))

    @field_validator("langs", mode="before")
    @classmethod
    def _langs(cls, value: Any) -> list[str]:
        if value is None:
            return []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise ValueError("must be a list of language codes such as en, de, pt-BR")
        return list(dict.fromkeys(_lang(v) for v in value))

    @model_validator(mode="after")
    def _no_self_veto(self) -> "BrandQuery":
        overlap = {" ".join(_term_words(t)) for t in self.any} & {" ".join(_term_words(t)) for t in self.none}
        if overlap:
            raise ValueError(f"terms in both any and none: {sorted(overlap)}")
        return self

    @classmethod
    def parse(cls, data: Any) -> "BrandQuery":
        """Validate one query (a dict); :class:`RegistryError` names the brand and the problem."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            name = data.get("name") if isinstance(data, dict) else None
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'query'}: {e['msg']}" for e in exc.errors())
            raise RegistryError(f"brand {name!r}: {problems}") from None

    def to_dict(self) -> dict[str, Any]:
        """The registry-file shape: ``none`` and ``langs`` only when set."""
        out: dict[str, Any] = {"name": self.name, "any": list(self.any)}
        if self.none:
            out["none"] = list(self.none)
        if self.langs:
            out["langs"] = list(self.langs)
        return out


@dataclass(frozen=True)
class Match:
    """A brand a text matched, and the ``any`` term (as written in the query) that matched it: the one with the most
    words when several did ("acme coffee" over "acme"), the first found among equals."""

    brand: str
    term: str


@dataclass
class _Entry:
    """Everything one automaton key stands for: (query index, term as written) per brand using it."""

    wanted: list[tuple[int, str, int]] = field(default_factory=list)  # (query index, term, rank)
    vetoes: list[int] = field(default_factory=list)
    veto_terms: list[tuple[int, str]] = field(default_factory=list)


class Matcher:
    """All brand queries compiled into one Aho-Corasick automaton. Immutable once built; thread-safe to read."""

    def __init__(self, queries: Iterable[BrandQuery], version: int = 0):
        self.queries = sorted(queries, key=lambda q: q.name)
        self.version = version
        self._langs = [frozenset(q.langs) for q in self.queries]
        entries: dict[str, _Entry] = {}

        def entry_for(key: str) -> _Entry:
            entry = entries.get(key)
            if entry is None:
                entry = entries[key] = _Entry()
            return entry

        for index, query in enumerate(self.queries):
            for term in query.any:
                words = _term_words(term)
                for key, own_form in _keys(words):  # rank: more words first, then the term's own #/@ form
                    entry_for(key).wanted.append((index, term, 2 * len(words) + own_form))
            for term in query.none:
                for key, _ in _keys(_term_words(term)):
                    entry = entry_for(key)
                    entry.vetoes.append(index)
                    entry.veto_terms.append((index, term))
        self._automaton = ahocorasick.Automaton()
        for key, entry in entries.items():
            self._automaton.add_word(key, entry)
        self._empty = not entries
        if entries:
            self._automaton.make_automaton()

    def __len__(self) -> int:
        return len(self.queries)

    def match(self, text: str, lang: str | None = None) -> list[Match]:
        """The brands ``text`` matches (in registry order), each with the first ``any`` term found in it."""
        if self._empty:
            return []
        haystack = canonical(text)
        found: dict[int, tuple[int, str]] = {}  # query -> (rank, term): the longest term wins ("acme coffee", not "acme")
        vetoed: set[int] = set()
        for _end, entry in self._automaton.iter(haystack):
            for index, term, rank in entry.wanted:
                if index not in found or rank > found[index][0]:
                    found[index] = (rank, term)
            vetoed.update(entry.vetoes)
        if not found:
            return []
        post_lang = _lang(lang)
        return [Match(self.queries[i].name, term) for i, (_, term) in sorted(found.items())
                if i not in vetoed and (not self._langs[i] or post_lang in self._langs[i])]

    def explain(self, text: str, lang: str | None = None) -> list[dict[str, Any]]:
        """For ``brands test``: every brand with a term in the text, whether it matched, and why (or why not)."""
        haystack = canonical(text)
        hits: dict[int, dict[str, list[str]]] = {}
        if not self._empty:
            for _end, entry in self._automaton.iter(haystack):
                for index, term, _ in entry.wanted:
                    hits.setdefault(index, {"any": [], "none": []})["any"].append(term)
                for index, term in entry.veto_terms:
                    hits.setdefault(index, {"any": [], "none": []})["none"].append(term)
        post_lang = _lang(lang)
        out = []
        for index in sorted(hits):
            query, hit = self.queries[index], hits[index]
            any_terms, none_terms = list(dict.fromkeys(hit["any"])), list(dict.fromkeys(hit["none"]))
            if not any_terms:
                continue
            if none_terms:
                matched, reason = False, f"excluded by {', '.join(map(repr, none_terms))}"
            elif query.langs and post_lang not in query.langs:
                matched, reason = False, f"language {lang or 'unknown'} not in {', '.join(query.langs)}"
            else:
                matched, reason = True, f"contains {', '.join(map(repr, any_terms))}"
            out.append({"brand": query.name, "matched": matched, "terms": any_terms, "excluded_by": none_terms,
                        "reason": reason})
        return out


# ---------------------------------------------------------------------------------------------- registry file (YAML)

def load_yaml(text: str) -> list[BrandQuery]:
    """Parse a registry file (``brands: [{name, any, none, langs}, ...]``); every problem is a RegistryError."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RegistryError(f"not valid YAML: {exc}") from None
    if not isinstance(data, dict) or set(data) != {"brands"} or not isinstance(data["brands"], list):
        raise RegistryError("the file must be a mapping with one key, 'brands', holding a list of brand queries")
    queries = [BrandQuery.parse(item) for item in data["brands"]]
    names = [q.name for q in queries]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise RegistryError(f"brand(s) listed more than once: {', '.join(twice)}")
    return queries


def dump_yaml(queries: Iterable[BrandQuery]) -> str:
    """The registry file of ``queries``, by name; ``load_yaml(dump_yaml(q)) == sorted(q)``."""
    import yaml

    body = {"brands": [q.to_dict() for q in sorted(queries, key=lambda q: q.name)]}
    return yaml.safe_dump(body, sort_keys=False, allow_unicode=True, default_flow_style=None, width=120)


# ---------------------------------------------------------------------------------------------- registry in Redis
# These take a redis-py client created with decode_responses=True, synchronous (CLI, dashboard) or asyncio (worker):
# the sync functions below are used by the CLI and the dashboard, LiveMatcher uses the asyncio client.

def _decode(name: str, raw: str) -> BrandQuery | None:
    try:
        return BrandQuery.parse({"name": name, **json.loads(raw)})
    except (RegistryError, ValueError, TypeError) as exc:
        log.error("brand query %r in Redis is not valid and is ignored: %s", name, exc)
        return None


def _encode(query: BrandQuery) -> str:
    body = query.to_dict()
    body.pop("name")
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def read_registry(client) -> tuple[list[BrandQuery], int]:
    """Every stored query (invalid entries logged and skipped) and the registry version, read atomically."""
    with client.pipeline(transaction=True) as pipe:
        pipe.hgetall(schema.BRAND_QUERIES_KEY)
        pipe.get(schema.BRAND_QUERIES_VERSION_KEY)
        stored, version = pipe.execute()
    queries = [q for q in (_decode(name, raw) for name, raw in sorted(stored.items())) if q is not None]
    return queries, int(version or 0)


def registry_version(client) -> int:
    return int(client.get(schema.BRAND_QUERIES_VERSION_KEY) or 0)


def upsert_queries(client, queries: Sequence[BrandQuery]) -> int:
    """Add or replace these brands' queries (others untouched); returns the new registry version."""
    if not queries:
        return registry_version(client)
    with client.pipeline(transaction=True) as pipe:
        pipe.hset(schema.BRAND_QUERIES_KEY, mapping={q.name: _encode(q) for q in queries})
        pipe.incr(schema.BRAND_QUERIES_VERSION_KEY)
        return int(pipe.execute()[-1])


def replace_registry(client, queries: Sequence[BrandQuery]) -> int:
    """Make the registry exactly ``queries`` (one transaction: workers never see half of it)."""
    with client.pipeline(transaction=True) as pipe:
        pipe.delete(schema.BRAND_QUERIES_KEY)
        if queries:
            pipe.hset(schema.BRAND_QUERIES_KEY, mapping={q.name: _encode(q) for q in queries})
        pipe.incr(schema.BRAND_QUERIES_VERSION_KEY)
        return int(pipe.execute()[-1])


def remove_query(client, name: str) -> bool:
    """Remove one brand's query; False when there was none. The brand's counted series stay."""
    removed = client.eval(_REMOVE, 2, schema.BRAND_QUERIES_KEY, schema.BRAND_QUERIES_VERSION_KEY,
                          normalise_brand(name))
    return bool(removed)


# remove and bump the version in one step, only when something was removed
_REMOVE = """
local n = redis.call('HDEL', KEYS[1], ARGV[1])
if n == 1 then redis.call('INCR', KEYS[2]) end
return n
"""


class LiveMatcher:
    """The worker's view of the registry: a :class:`Matcher` rebuilt whenever the registry version moves.

    :meth:`current` checks the version at most every ``reload_seconds`` (one ``GET``); a Redis error propagates
    (the batch is retried like any Redis outage), except that an already loaded matcher keeps serving while a
    check fails, so a brief outage of the version read never stalls matching."""

    def __init__(self, redis, reload_seconds: float):
        self.redis = redis
        self.reload_seconds = reload_seconds
        self.matcher: Matcher | None = None
        self._checked_at = 0.0

    async def current(self) -> Matcher:
        now = time.monotonic()
        if self.matcher is not None and now - self._checked_at < self.reload_seconds:
            return self.matcher
        try:
            version = int(await self.redis.get(schema.BRAND_QUERIES_VERSION_KEY) or 0)
            if self.matcher is None or version != self.matcher.version:
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.hgetall(schema.BRAND_QUERIES_KEY)
                    pipe.get(schema.BRAND_QUERIES_VERSION_KEY)
                    stored, version = await pipe.execute()
                started = time.perf_counter()
                queries = [q for q in (_decode(n, raw) for n, raw in stored.items()) if q is not None]
                # thousands of brands take a second or two to compile: off the event loop (heartbeats keep going)
                self.matcher = await asyncio.to_thread(Matcher, queries, int(version or 0))
                log.info("brand registry version %s loaded: %d queries, automaton built in %.0f ms",
                         self.matcher.version, len(self.matcher), (time.perf_counter() - started) * 1000)
        except Exception:
            if self.matcher is None:
                raise
            log.warning("brand registry check failed; matching with version %s meanwhile", self.matcher.version,
                        exc_info=True)
        self._checked_at = now
        return self.matcher


def assign(matcher: Matcher, post: Post, mode: str) -> Post | None:
    """The post with its brands after matching (``mode`` untagged | all), or None when it has no brand at all.

    ``untagged``: a tagged post is returned as it is; ``all``: tags plus matches. ``matched`` maps each matched
    brand to its term (tags are not in it)."""
    if mode == "untagged" and post.brands:
        return post
    matches = matcher.match(post.text, post.lang)
    if not matches:
        return post if post.brands else None
    # a post holds at most MAX_BRANDS brands (the contract of monitor.post): the first ones in registry order
    brands = list(dict.fromkeys([*post.brands, *(m.brand for m in matches)]))[:MAX_BRANDS]
    matches = [m for m in matches if m.brand in brands]
    return post.model_copy(update={"brands": brands, "matched": {m.brand: m.term for m in matches}})


class IngestMatching:
    """The worker's (and replay's) matching step, one call per batch right after parsing: tags posts by the
    registry under ``EM_MONITOR_BRAND_MATCHING`` (untagged | all) and takes out the posts left with no brand.

    Those are not stored and not dead-lettered (they are valid posts, just about nothing tracked): each is counted,
    per input topic, in ``em:unmatched`` (Redis) and ``em_unmatched_total`` (Prometheus). That count is at-least-once:
    a batch retried after a later failure counts its unmatched posts again. A Redis outage while reading the
    registry or counting fails the attempt like any Redis outage (the batch waits and retries)."""

    def __init__(self, settings, store):
        self.mode = settings.brand_matching
        self.reload_seconds = settings.brand_reload_seconds
        self.store = store
        self.live: LiveMatcher | None = None

    async def _matcher(self) -> "Matcher":
        if self.live is None:
            self.live = LiveMatcher(self.store.redis, self.reload_seconds)
        return await self.live.current()

    async def brands_of(self, post: Post) -> list[str]:
        """The brands ``post`` would be counted for now, without counting anything (replay recompute's pre-scan)."""
        if self.mode == "untagged" and post.brands:
            return list(post.brands)
        tagged = assign(await self._matcher(), post, self.mode)
        return list(tagged.brands) if tagged is not None else []

    async def apply(self, parsed: list[tuple[Any, Post]]) -> tuple[list[tuple[Any, Post]], int]:
        """``(record, post)`` pairs -> the pairs that have a brand (posts tagged), and how many had none."""
        from monitor.metrics import METRICS

        if self.mode == "untagged" and all(post.brands for _, post in parsed):
            return parsed, 0  # nothing to match: no registry read
        matcher = await self._matcher()
        METRICS.brand_queries.set(len(matcher))
        METRICS.brand_registry_version.set(matcher.version)
        kept: list[tuple[Any, Post]] = []
        unmatched: dict[str, int] = {}
        for record, post in parsed:
            tagged = assign(matcher, post, self.mode)
            if tagged is None:
                unmatched[record.topic] = unmatched.get(record.topic, 0) + 1
            else:
                kept.append((record, tagged))
        if unmatched:
            async with self.store.redis.pipeline(transaction=False) as pipe:
                for topic, n in unmatched.items():
                    pipe.hincrby(schema.UNMATCHED_KEY, topic, n)
                await pipe.execute()
            for topic, n in unmatched.items():
                METRICS.unmatched.labels(topic).inc(n)
        return kept, sum(unmatched.values())
