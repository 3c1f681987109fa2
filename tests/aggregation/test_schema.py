"""The registry schema: README's key table is generated from it."""

import re

from project.aggregation.schema import SECTIONS, markdown_table
from tests.helpers import BASE_DIR

README_TABLE = re.compile(
    r"<!-- registry-keys: begin -->\n(.*?)<!-- registry-keys: end -->", re.DOTALL
)


def test_readme_key_table_is_the_generated_one():
    """README.md's "Registry keys" table is `python -m project.aggregation.schema`."""
    found = README_TABLE.search((BASE_DIR / "README.md").read_text())
    assert found, "README.md lost its registry-keys markers"
    assert found.group(1) == markdown_table()


def test_every_key_is_documented_once_per_table():
    """No table declares a key twice, and every key says what it is for."""
    for section in SECTIONS:
        names = [key.name for key in section.keys]
        assert len(names) == len(set(names)), section.table
        assert all(key.doc for key in section.keys), section.table
