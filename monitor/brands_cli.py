"""``emotion-monitor brands ...``: the brand registry (:mod:`monitor.brands`) in the Redis of ``EM_MONITOR_REDIS_URL``.

Every change bumps the registry version; running workers pick it up within ``EM_MONITOR_BRAND_RELOAD_SECONDS``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

__all__ = ["brands"]


def _client():
    import redis

    from monitor.cli import _settings

    settings = _settings()
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True, socket_timeout=5,
                                  socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        raise click.ClickException(f"cannot reach Redis at {settings.redis_url} ({exc}); is the monitor's Redis "
                                   "running? Set EM_MONITOR_REDIS_URL otherwise.") from None
    return client


def _matching_note() -> str:
    from monitor.cli import _settings

    mode = _settings().brand_matching
    return "" if mode != "off" else " (note: EM_MONITOR_BRAND_MATCHING=off here: workers with it off ignore queries)"


@click.group("brands")
def brands() -> None:
    """Brand queries: which brands untagged posts are counted for (import/export YAML, add, remove, test)."""


@brands.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--merge", is_flag=True, help="Add/replace only the brands in FILE (default: FILE becomes the registry).")
def import_(file: Path, merge: bool) -> None:
    """Load brand queries from a YAML FILE (brands: [{name, any, none, langs}])."""
    from monitor.brands import RegistryError, load_yaml, read_registry, replace_registry, upsert_queries

    try:
        queries = load_yaml(file.read_text(encoding="utf-8"))
    except (RegistryError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"{file}: {exc}") from None
    client = _client()
    before = {q.name for q in read_registry(client)[0]}
    version = upsert_queries(client, queries) if merge else replace_registry(client, queries)
    names = {q.name for q in queries}
    removed = set() if merge else before - names
    click.echo(f"imported {len(queries)} brand quer{'y' if len(queries) == 1 else 'ies'} "
               f"({len(names - before)} new, {len(names & before)} replaced, {len(removed)} removed); "
               f"registry version {version}{_matching_note()}")


@brands.command("export")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to this file instead of stdout.")
def export(output: Path | None) -> None:
    """Print the registry as YAML (the shape `brands import` reads)."""
    from monitor.brands import dump_yaml, read_registry

    text = dump_yaml(read_registry(_client())[0])
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")


@brands.command("list")
def list_() -> None:
    """One line per brand: name, terms, exclusions, languages."""
    from monitor.brands import read_registry

    queries, version = read_registry(_client())
    for q in queries:
        extra = (f"  none: {', '.join(q.none)}" if q.none else "") + (f"  langs: {', '.join(q.langs)}" if q.langs
                                                                        else "")
        click.echo(f"{q.name}  any: {', '.join(q.any)}{extra}")
    click.echo(f"{len(queries)} brand quer{'y' if len(queries) == 1 else 'ies'}, registry version {version}",
               err=True)


@brands.command("add")
@click.argument("name")
@click.option("--any", "any_", multiple=True, required=True, help="A term that makes a post match (repeatable).")
@click.option("--none", "none_", multiple=True, help="A term that excludes a post (repeatable).")
@click.option("--lang", "langs", multiple=True, help="Only posts in this language, e.g. en (repeatable).")
def add(name: str, any_: tuple[str, ...], none_: tuple[str, ...], langs: tuple[str, ...]) -> None:
    """Add the query of brand NAME, or replace it if it exists."""
    from monitor.brands import BrandQuery, RegistryError, upsert_queries

    try:
        query = BrandQuery.parse({"name": name, "any": list(any_), "none": list(none_), "langs": list(langs)})
    except RegistryError as exc:
        raise click.ClickException(str(exc)) from None
    version = upsert_queries(_client(), [query])
    click.echo(f"brand {query.name!r} saved; registry version {version}{_matching_note()}")


@brands.command("remove")
@click.argument("name")
def remove(name: str) -> None:
    """Remove brand NAME's query (its counted data stays)."""
    from monitor.brands import remove_query
    from monitor.post import normalise_brand

    try:
        name = normalise_brand(name)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    removed = remove_query(_client(), name)
    if not removed:
        raise click.ClickException(f"no brand query named {name!r}")
    click.echo(f"brand {name!r} removed")


@brands.command("test")
@click.argument("text")
@click.option("--lang", default=None, help="The post's language (for queries with langs).")
@click.option("--file", "registry_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Test against this YAML file instead of the registry in Redis.")
def test(text: str, lang: str | None, registry_file: Path | None) -> None:
    """Print the brands TEXT matches, and why; exit status 1 when it matches none."""
    from monitor.brands import Matcher, RegistryError, load_yaml, read_registry

    if registry_file is not None:
        try:
            queries = load_yaml(registry_file.read_text(encoding="utf-8"))
        except RegistryError as exc:
            raise click.ClickException(f"{registry_file}: {exc}") from None
    else:
        queries = read_registry(_client())[0]
    found = Matcher(queries).explain(text, lang)
    for row in found:
        click.echo(f"{row['brand']}: {'match' if row['matched'] else 'no match'} ({row['reason']})")
    if not any(row["matched"] for row in found):
        click.echo(f"no brand matches (of {len(queries)} queries)")
        sys.exit(1)
