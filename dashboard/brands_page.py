"""The dashboard's **Brands** page: the brand registry (:mod:`monitor.brands`) listed, a query added or edited, and a
preview of which recent stored posts the query being edited would match.

The registry is the one in Redis that workers read: saving here bumps its version, so running workers apply the
change within ``EM_MONITOR_BRAND_RELOAD_SECONDS``. The preview runs the worker's own matcher on the newest posts of
every brand's recent-posts store (``em:posts:{brand}``), at most :data:`PREVIEW_PER_BRAND` per brand and
:data:`PREVIEW_MAX` in all — posts no query matched were never stored, so they cannot be previewed.
"""

from __future__ import annotations

import json

import pandas as pd
import redis
import streamlit as st

from monitor import schema
from monitor.brands import BrandQuery, Matcher, RegistryError, read_registry, remove_query, upsert_queries

__all__ = ["PREVIEW_MAX", "PREVIEW_PER_BRAND", "recent_posts", "render"]

PREVIEW_PER_BRAND = 200
PREVIEW_MAX = 5000
NEW = "➕ new brand"


def recent_posts(client: redis.Redis, per_brand: int = PREVIEW_PER_BRAND, limit: int = PREVIEW_MAX) -> list[dict]:
    """The newest stored posts of every brand (one pipeline), de-duplicated by id, newest first."""
    brands = sorted(client.smembers(schema.BRANDS_KEY))
    pipe = client.pipeline(transaction=False)
    for brand in brands:
        pipe.zrevrange(schema.posts_key(brand), 0, per_brand - 1)
    posts: dict[str, dict] = {}
    for members in pipe.execute() if brands else []:
        for member in members:
            try:
                post = json.loads(member)
                posts.setdefault(str(post["id"]), post)
            except (ValueError, KeyError, TypeError):
                continue  # a malformed member is skipped here, as on the main page
    return sorted(posts.values(), key=lambda p: p.get("created_at", 0), reverse=True)[:limit]


def _lines(text: str) -> list[str]:
    """Terms from a text area: one per line (commas inside a term are kept: "acme, inc." is one term)."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def _preview(client: redis.Redis, query: BrandQuery) -> None:
    posts = recent_posts(client)
    matcher = Matcher([query])
    rows = []
    for post in posts:
        hits = matcher.match(post.get("text", ""), post.get("lang"))
        if hits:
            rows.append({"time": pd.to_datetime(post.get("created_at", 0), unit="ms", utc=True),
                         "text": post.get("text", ""), "term": hits[0].term,
                         "stored for": ", ".join(post.get("brands", [])), "source": post.get("source", "")})
    st.caption(f"{len(rows)} of the {len(posts)} most recent stored posts match this query.")
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")


def render(settings, client: redis.Redis) -> None:
    """Draw the page; Redis errors become messages."""
    st.title("Brands")
    st.caption("Brand queries tag posts that arrive without a brand: a post counts for a brand when it contains any "
               "of its terms (whole words, any case and accents, #tag / @handle forms, possessives) and none of "
               "its exclusions. Workers apply changes within seconds.")
    try:
        queries, version = read_registry(client)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        st.error(f"Redis is unreachable ({exc}). Reload the page to retry.")
        return
    if queries:
        st.dataframe(pd.DataFrame([{"brand": q.name, "any": ", ".join(q.any), "none": ", ".join(q.none),
                                    "langs": ", ".join(q.langs)} for q in queries]),
                     hide_index=True, width="stretch")
    else:
        st.info("No brand queries yet: only posts that arrive tagged with a brand are counted. Add one below, or "
                "`emotion-monitor brands import FILE`.")
    st.caption(f"Registry version {version} · {len(queries)} brand quer{'y' if len(queries) == 1 else 'ies'}")

    by_name = {q.name: q for q in queries}
    chosen = st.selectbox("Add or edit", [NEW, *by_name], key="em_brand_edit")
    current = by_name.get(chosen)
    suffix = chosen  # per-brand widget keys: switching brands shows that brand's values
    name = st.text_input("Brand name (its series name)", value=current.name if current else "",
                         key=f"em_bq_name_{suffix}", disabled=current is not None)
    any_terms = st.text_area("Match any of these terms (one per line)", value="\n".join(current.any) if current else "",
                             key=f"em_bq_any_{suffix}")
    none_terms = st.text_area("...and none of these (one per line)", value="\n".join(current.none) if current else "",
                              key=f"em_bq_none_{suffix}")
    langs = st.text_input("Only these languages (comma separated, empty: any)",
                          value=", ".join(current.langs) if current else "", key=f"em_bq_langs_{suffix}")
    query = None
    if name.strip() and _lines(any_terms):
        try:
            query = BrandQuery.parse({"name": name, "any": _lines(any_terms), "none": _lines(none_terms),
                                      "langs": [lang.strip() for lang in langs.split(",") if lang.strip()]})
        except RegistryError as exc:
            st.error(str(exc))
    save, remove = st.columns(2)
    if save.button("Save", key="em_bq_save", disabled=query is None, type="primary"):
        new_version = upsert_queries(client, [query])
        st.success(f"Saved {query.name!r} (registry version {new_version}); workers apply it within seconds.")
    if current is not None and remove.button("Remove", key="em_bq_remove"):
        remove_query(client, current.name)
        st.success(f"Removed {current.name!r}; its counted data stays.")

    st.subheader("Preview")
    if query is None:
        st.info("Give a name and at least one term to preview which recent posts the query matches.")
        return
    try:
        _preview(client, query)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        st.error(f"Redis is unreachable ({exc}).")
