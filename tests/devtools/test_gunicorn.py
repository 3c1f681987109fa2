"""The starter's DATABASE_URL options."""

from devtools.gunicorn import with_query


def test_with_query_adds_options_to_a_database_url():
    """Options go after ``?`` or ``&``, encoded; none leaves the URL alone."""
    url = "postgres://u@127.0.0.1:5432/db"
    assert with_query(url, {}) == url
    assert with_query(url, {"application_name": "a b"}) == url + "?application_name=a+b"
    assert (
        with_query(url + "?sslmode=disable", {"conn_max_age": "60"})
        == url + "?sslmode=disable&conn_max_age=60"
    )
