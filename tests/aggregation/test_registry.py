"""The registry loader: a valid file parses; every mistake names its line and key."""

import textwrap

import pytest

from project.aggregation.registry import RegistryError, load_registry, parse_registry
from project.http.errors import ApiError

GOOD = """\
[upstreams.users]
base_url = "${USERS_URL:-http://127.0.0.1:9}/"
headers = { Authorization = "Bearer ${USERS_TOKEN}" }

[queries.orders]
sql = "SELECT %s::int AS id"
params = ["user_id"]

[aggregations.profile]
deadline_ms = 400

[aggregations.profile.params]
user_id = { type = "int", min = 1, max = 100, required = true }
lang = { type = "str", pattern = "[a-z]{2}", default = "en" }
tag = { type = "str" }

[aggregations.profile.sources.user]
upstream = "users"
path = "/users/{user_id}"
query = { lang = "{lang}" }

[aggregations.profile.sources.orders]
sql = "orders"
required = false

[aggregations.profile.sources.tagged]
upstream = "users"
path = "/tags/{tag}"
required = false
"""


def parse(text: str, **environ: str):
    return parse_registry(text, source="agg.toml", environ=environ)


def test_valid_registry_parses_with_env_and_defaults():
    """Env references expand (with defaults); unset keys take their defaults."""
    registry = parse(GOOD, USERS_TOKEN="s3cret")
    users = registry.upstreams["users"]
    assert users.base_url == "http://127.0.0.1:9"
    assert users.headers == {"Authorization": "Bearer s3cret"}
    assert (users.timeout_ms, users.retry.retries, users.breaker.window) == (
        1000,
        0,
        20,
    )
    profile = registry.aggregations["profile"]
    assert (profile.deadline_ms, profile.max_deadline_ms) == (400, 400)
    assert [s.name for s in profile.sources] == ["user", "orders", "tagged"]
    assert profile.sources[0].uses == {"user_id", "lang"}


def test_the_shipped_example_registry_is_valid():
    """examples/aggregations.toml (the README's worked example) loads without env."""
    from django.conf import settings

    registry = load_registry(
        settings.BASE_DIR / "examples" / "aggregations.toml", environ={}
    )
    assert set(registry.aggregations) == {"product"}


BAD = [
    ("[upstreams.users\n", "agg.toml: invalid TOML", None),
    ("nonsense = 1\n", "nonsense: unknown key", 1),
    (GOOD.replace('base_url = "${USERS_URL', 'base_uri = "${USERS_URL'),
     "upstreams.users.base_uri: unknown key", 2),
    (GOOD, "upstreams.users.headers.Authorization: environment variable "
     "USERS_TOKEN is not set", 3),
    (GOOD.replace("${USERS_URL:-http://127.0.0.1:9}/", "ftp://x"),
     "upstreams.users.base_url: must be an absolute http(s) URL", 2),
    (GOOD.replace('upstream = "users"\npath = "/users',
                  'upstream = "userz"\npath = "/users'),
     "aggregations.profile.sources.user.upstream: unknown upstream 'userz'", 18),
    (GOOD.replace('sql = "orders"', 'sql = "ordrs"'),
     "aggregations.profile.sources.orders.sql: unknown query 'ordrs'", 23),
    (GOOD.replace("/users/{user_id}", "/users/{uid}"),
     "aggregations.profile.sources.user: uses undeclared parameter 'uid'", 17),
    (GOOD.replace("/users/{user_id}", "http://evil/{user_id}"),
     "aggregations.profile.sources.user.path: must start with /", 19),
    (GOOD.replace("/users/{user_id}", "/users/{user_id"),
     "aggregations.profile.sources.user.path: unbalanced", 19),
    (GOOD.replace('"SELECT %s::int AS id"', '"SELECT %s, %s"'),
     "queries.orders.sql: has 2 %s placeholders for 1 params", 6),
    (GOOD.replace("deadline_ms = 400", "deadline_ms = -4"),
     "aggregations.profile.deadline_ms: must be between 1 and 600000", 10),
    (GOOD.replace("deadline_ms = 400", 'deadline_ms = "400"'),
     "aggregations.profile.deadline_ms: must be an integer", 10),
    (GOOD.replace('pattern = "[a-z]{2}"', 'pattern = "[a-z"'),
     "aggregations.profile.params.lang.pattern: is not a valid regex", 14),
    (GOOD.replace('default = "en"', 'default = "english"'),
     "aggregations.profile.params.lang.default: lang must match", 14),
    (GOOD.replace("[aggregations.profile.sources.tagged]\nupstream",
                  "[aggregations.profile.sources.tagged]\nrequired = true\nupstream")
     .replace('path = "/tags/{tag}"\nrequired = false', 'path = "/tags/{tag}"'),
     "aggregations.profile.sources.tagged: a required source cannot use 'tag'", 26),
    (GOOD.replace("[aggregations.profile.sources.orders]\nsql",
                  "[aggregations.profile.sources.orders]\nupstream = \"users\"\nsql"),
     "aggregations.profile.sources.orders: give either upstream", 22),
    (GOOD.replace('default = "en"', "default = true"),
     "aggregations.profile.params.lang.default: must be a valid str", 14),
    ("[aggregations.x]\ndeadline_ms = 5\n",
     "aggregations.x.sources: must be a table", None),
    ("[upstreams.Users]\nbase_url = 'http://x'\n",
     "upstreams.Users: names are lowercase", 1),
]  # fmt: skip


@pytest.mark.parametrize("text, message, line", BAD)
def test_bad_registry_names_line_and_key(text, message, line):
    """Each mistake raises RegistryError naming the file, line and dotted key."""
    with pytest.raises(RegistryError) as caught:
        parse(text, USERS_TOKEN="" if text == GOOD else "t")
    assert message in str(caught.value)
    if line is not None:
        assert str(caught.value).startswith(f"agg.toml:{line}: ")


def test_missing_file_is_a_registry_error(tmp_path):
    """A path that cannot be read is a RegistryError naming it."""
    with pytest.raises(RegistryError, match="cannot read the registry"):
        load_registry(tmp_path / "nope.toml")


PARAMS = [
    ({"lang": ["de"]}, "user_id", "user_id is required"),
    ({"user_id": ["0"]}, "user_id", "between 1 and 100"),
    ({"user_id": ["1e3"]}, "user_id", "must be an integer"),
    ({"user_id": ["1", "2"]}, "user_id", "more than once"),
    ({"user_id": ["1"], "lang": ["../x"]}, "lang", "must match"),
    ({"user_id": ["1"], "tag": ["a.b"]}, "tag", "must match"),
    ({"user_id": ["1"], "url": ["http://evil"]}, "url", "unknown parameter"),
]


@pytest.mark.parametrize("query, param, message", PARAMS)
def test_bad_params_are_a_400_naming_the_parameter(query, param, message):
    """Unknown, missing, repeated or invalid parameters raise a 400 naming them."""
    profile = parse(GOOD, USERS_TOKEN="t").aggregations["profile"]
    with pytest.raises(ApiError) as caught:
        profile.parse_params(query)
    assert (caught.value.status, caught.value.extra["param"]) == (400, param)
    assert message in caught.value.message


def test_params_take_defaults_and_leave_optional_ones_out():
    """Defaults fill in; an optional parameter without default stays absent."""
    profile = parse(GOOD, USERS_TOKEN="t").aggregations["profile"]
    assert profile.parse_params({"user_id": ["7"]}) == {"user_id": 7, "lang": "en"}


def test_line_numbers_follow_inline_tables():
    """A problem inside an inline table points at that table's line."""
    text = textwrap.dedent(GOOD).replace('type = "int", min = 1', 'type = "float"')
    with pytest.raises(RegistryError, match=r"^agg.toml:13: .*user_id.type"):
        parse(text, USERS_TOKEN="t")
