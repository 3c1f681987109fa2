"""The service's own PostgreSQL role: no superuser, the owner of its database only.

The stack creates it (or resets its password) in the embedded cluster at every
start, as the cluster's superuser, and the service (migrations included) logs
in as it: a bug in the service or in PgBouncer's configuration then reaches
one database's tables, not ``COPY ... TO PROGRAM`` or other databases.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg2
from psycopg2 import sql

_ATTRIBUTES = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
# What the database already holds from before it had its own role (made by
# the superuser): tables, views and sequences no column owns (those follow
# their table).
_NOT_OURS = """
SELECT c.oid::regclass::text FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
  AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = %s)
  AND NOT EXISTS (
      SELECT 1 FROM pg_depend d
      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
        AND d.deptype IN ('a', 'i'))
"""


def ensure_role(admin: dict[str, Any], database: str, password: str) -> str:
    """Make role ``database`` own database ``database``, with ``password``.

    ``admin``: ``psycopg2.connect`` arguments of a superuser, ``dbname``
    aside. The role is created, or its attributes and password are reset;
    the database is closed to other roles (no ``CONNECT`` for PUBLIC), and
    whatever its public schema holds from before becomes the role's, so
    migrations can alter it. Returns the role's name.
    """
    if database in ("postgres", "template0", "template1"):
        raise ValueError(f"the service needs a database of its own, not {database}")
    role = sql.Identifier(database)
    with _connect(admin, "postgres") as cursor:
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [database])
        verb = "ALTER ROLE {} WITH" if cursor.fetchone() else "CREATE ROLE {}"
        # psycopg2 binds the password client-side: these statements take none.
        cursor.execute(
            sql.SQL(f"{verb} {_ATTRIBUTES} PASSWORD %s").format(role), [password]
        )
        cursor.execute(
            sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                sql.Identifier(database), role
            )
        )
        cursor.execute(
            sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(
                sql.Identifier(database)
            )
        )
    with _connect(admin, database) as cursor:
        cursor.execute(_NOT_OURS, [database])
        for (relation,) in cursor.fetchall():
            # The catalog's regclass text is an identifier already quoted.
            cursor.execute(
                sql.SQL("ALTER TABLE {} OWNER TO {}").format(sql.SQL(relation), role)
            )
    return database


@contextmanager
def _connect(admin: dict[str, Any], dbname: str) -> Iterator[Any]:
    """An autocommit cursor on ``dbname``, closed with its connection."""
    connection = psycopg2.connect(**{**admin, "dbname": dbname}, connect_timeout=10)
    try:
        connection.autocommit = True
        yield connection.cursor()
    finally:
        connection.close()
