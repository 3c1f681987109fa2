"""``.env.template`` and README's settings table, written from ``settings/knobs/``.

``python -m settings.docs`` (``make settings-docs``) rewrites both; README's
table is what lies between its ``settings-table`` markers, the rest of the
README is left as it is. A test regenerates both and compares.
"""

import sys
import textwrap

from settings import BASE_DIR, knobs

TEMPLATE = BASE_DIR / ".env.template"
README = BASE_DIR / "README.md"
BEGIN = "<!-- settings-table:begin -->"
END = "<!-- settings-table:end -->"
COMMAND = "make settings-docs"

_TEMPLATE_HEAD = f"""\
# Generated from settings/knobs/ by `{COMMAND}`: edit those, not this file.
# Copy to .env (next to manage.py; git-ignored) and edit. The OS environment wins
# over .env. An empty value (KEY=) means the default; every key is optional in
# development and test.
"""


def _plain(text: str) -> str:
    """``text`` without Markdown's backticks (the template is plain text)."""
    return text.replace("`", "")


def _title(group: object) -> str:
    return (group.__doc__ or "").strip().splitlines()[0].rstrip(".")


def _defaults(knob: knobs.Knob) -> str:
    default = knob.default_text()
    production = knob.production_text()
    return f"{default}; production: {production}" if production else default


def env_template() -> str:
    """The text of ``.env.template``."""
    parts = [_TEMPLATE_HEAD]
    for group in knobs.GROUPS:
        parts.append(f"\n# --- {_title(group)}\n")
        for knob in group.KNOBS:
            comment = f"{knob.doc} Default: {_defaults(knob)}."
            for line in textwrap.wrap(_plain(comment), 78):
                parts.append(f"# {line}\n")
            parts.append(f"{knob.name}={knob.template}\n")
    return "".join(parts)


def readme_table() -> str:
    """README's settings table, markers included."""
    rows = [
        BEGIN,
        f"<!-- Generated from settings/knobs/ by `{COMMAND}`; edit those. -->",
        "",
        "| key | default | meaning |",
        "| --- | --- | --- |",
    ]
    for knob in knobs.KNOBS:
        doc = knob.doc.replace("|", "\\|")
        rows.append(f"| `{knob.name}` | {_defaults(knob)} | {doc} |")
    rows.append(END)
    return "\n".join(rows)


def readme_with_table(readme: str) -> str:
    """``readme`` with what lies between the markers replaced by the table."""
    start = readme.find(BEGIN)
    end = readme.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README.md has no {BEGIN} ... {END} markers")
    return readme[:start] + readme_table() + readme[end + len(END) :]


def main() -> int:
    """Write ``.env.template`` and README's table."""
    TEMPLATE.write_text(env_template())
    README.write_text(readme_with_table(README.read_text()))
    print(f"wrote {TEMPLATE.name} and the settings table of {README.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
