"""The aggregation registry: upstreams, named SQL queries and aggregations, from TOML.

The file is versioned with the code and validated as a whole when it is loaded
(at start-up): any problem raises ``RegistryError`` naming the file, the line
(when it can be found) and the dotted key, e.g.
``aggregations.toml:14: aggregations.profile.sources.user.upstream: unknown
upstream 'userz'``. Clients never supply a URL or SQL: they only fill in the
declared parameters, which are validated here (see ``Aggregation.parse_params``)
and URL-encoded or bound by the driver where they are used. Which keys each
table has, their types, defaults and ranges: ``project.aggregation.schema``.

Values of ``base_url`` and ``headers`` may name environment variables, shell
style: ``${USERS_URL}`` or ``${USERS_URL:-http://127.0.0.1:9101}``; a secret
such as an auth header never has to be in the file.
"""

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..declarations import Registry
from ..schema import ROOT
from .aggregations import read_aggregation
from .reader import Reader, RegistryError
from .upstreams import read_query, read_upstream

__all__ = ["RegistryError", "load_registry", "parse_registry"]


def load_registry(
    path: str | Path, environ: Mapping[str, str] | None = None
) -> Registry:
    """Read and validate the registry at ``path``; raise ``RegistryError`` if bad."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise RegistryError(
            f"{path}: cannot read the registry: {exc.strerror}"
        ) from exc
    return parse_registry(text, source=str(path), environ=environ)


def parse_registry(
    text: str, *, source: str = "<registry>", environ: Mapping[str, str] | None = None
) -> Registry:
    """Validate registry TOML ``text`` (``source`` names it in error messages)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError(f"{source}: invalid TOML: {exc}") from exc
    reader = Reader(text, source, os.environ if environ is None else environ)
    return _registry(reader, data)


def _registry(reader: Reader, data: dict[str, Any]) -> Registry:
    top = reader.open(data, (), ROOT)
    upstreams = {
        name: read_upstream(reader, value, ("upstreams", name))
        for name, value in top.table("upstreams").items()
    }
    queries = {
        name: read_query(reader, value, ("queries", name))
        for name, value in top.table("queries").items()
    }
    aggregations = {
        name: read_aggregation(
            reader, value, ("aggregations", name), upstreams, queries
        )
        for name, value in top.table("aggregations").items()
    }
    return Registry(upstreams, queries, aggregations)
