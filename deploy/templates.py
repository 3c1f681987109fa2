"""Fill the ``{{name}}`` fields of the configuration templates in deploy/."""

import re

_FIELD = re.compile(r"\{\{(\w+)\}\}")


def render(template: str, **values: str) -> str:
    """``template`` with every ``{{name}}`` replaced by ``values[name]``.

    ``{{...}}`` rather than ``$name`` or ``{name}``: nginx's configuration is
    full of both. A field without a value is a KeyError, not a silent blank.
    """
    missing = sorted(set(_FIELD.findall(template)) - values.keys())
    if missing:
        raise KeyError(f"no value for {', '.join(missing)}")
    return _FIELD.sub(lambda match: values[match.group(1)], template)
