"""Which requests admission control may refuse first: a priority per path prefix.

Decided from the path alone, before Django resolves anything, so refusing
costs next to nothing. The longest matching prefix wins; a path no rule
matches is ``normal``.
"""

from enum import IntEnum

from .caller import TrafficClass


class Priority(IntEnum):
    """Lower values are served first and refused last."""

    EXEMPT = 0  # never refused nor counted: probes and metrics
    CRITICAL = 1
    NORMAL = 2
    SHEDDABLE = 3


class RoutePriorities:
    """Path prefix -> priority, longest prefix first."""

    def __init__(self, rules: dict[str, Priority]) -> None:
        self.rules = sorted(rules.items(), key=lambda rule: -len(rule[0]))

    @classmethod
    def parse(cls, raw: str) -> "RoutePriorities":
        """Read ``prefix=priority,...`` (the ``SHED_ROUTES`` setting).

        A malformed rule raises ValueError naming it: a typo must not silently
        make a probe sheddable.
        """
        rules: dict[str, Priority] = {}
        for item in raw.split(","):
            item = item.strip()
            if not item:
                continue
            prefix, sep, name = item.partition("=")
            prefix, name = prefix.strip(), name.strip().upper()
            if (
                not sep
                or not prefix.startswith("/")
                or name not in Priority.__members__
            ):
                choices = ", ".join(p.name.lower() for p in Priority)
                raise ValueError(
                    f"SHED_ROUTES: {item!r} is not '/prefix=priority' "
                    f"(priority one of {choices})"
                )
            rules[prefix] = Priority[name]
        return cls(rules)

    def priority(self, path: str) -> Priority:
        """The priority of a request for ``path``."""
        for prefix, priority in self.rules:
            if path.startswith(prefix):
                return priority
        return Priority.NORMAL


# A route's priority is its upstream calls' traffic class (probes are never
# shed, so their calls, if any, are critical).
_TRAFFIC_CLASS: dict[Priority, TrafficClass] = {
    Priority.EXEMPT: "critical",
    Priority.CRITICAL: "critical",
    Priority.NORMAL: "normal",
    Priority.SHEDDABLE: "sheddable",
}


def traffic_class(priority: Priority) -> TrafficClass:
    """The traffic class of the upstream calls a route of ``priority`` makes."""
    return _TRAFFIC_CLASS[priority]
