"""The routing form: every field parsed and checked before anything is written to Redis.

A field the form leaves out keeps its current value, so a strategy toggle posts only
``strategy`` and the parameters stay as they are. Every bad field is reported at once,
each with a message that says what was given and what is allowed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Final

from duplex.registry.records import PriorityRule, RoutingSettings, Strategy, WorkerRecord

# Names the routing filters understand even when no live worker advertises them yet: the two
# flags every worker announces, and the guide's examples of further capabilities.
BASE_CAPABILITIES: Final = frozenset({"streaming", "zero_shot", "ssml", "emotive"})
# Keeps a mistyped number from becoming a setting nobody meant (and a float from overflowing).
MAX_RESIDENT_WEIGHT: Final = 1000.0
MAX_OVERFLOW_THRESHOLD: Final = 1_000_000
MAX_PRIORITY: Final = 1000
_ADAPTER_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_TRUE: Final = frozenset({"true", "on", "yes", "1"})
_FALSE: Final = frozenset({"false", "off", "no", "0"})
FIELDS: Final = (
    "strategy",
    "prefer_resident_models",
    "resident_weight",
    "overflow_threshold",
    "required_capabilities",
    "worker_priority",
)


@dataclass(frozen=True)
class FieldError:
    """One bad form value: the field's name and what is wrong with it."""

    field: str
    message: str


class RoutingFormError(ValueError):
    """The form has at least one bad value; nothing may be written."""

    def __init__(self, errors: Iterable[FieldError]) -> None:
        self.errors = tuple(errors)
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in self.errors))


def known_capabilities(workers: Iterable[WorkerRecord]) -> frozenset[str]:
    """Capability names a `required_capabilities` entry may use: the base names and every
    name a live worker advertises."""
    names = set(BASE_CAPABILITIES)
    for worker in workers:
        names |= worker.capabilities.names()
    return frozenset(names)


def parse_routing_form(
    form: Mapping[str, str], current: RoutingSettings, *, capabilities: frozenset[str]
) -> RoutingSettings:
    """``current`` with the form's fields applied; raises RoutingFormError listing every
    bad field. ``capabilities`` are the names `required_capabilities` may use."""
    errors: list[FieldError] = []
    changes: dict[str, object] = {}
    parsers = {
        "strategy": _strategy,
        "prefer_resident_models": _flag,
        "resident_weight": _resident_weight,
        "overflow_threshold": _overflow_threshold,
        "worker_priority": _worker_priority,
    }
    for name, parse in parsers.items():
        if name in form:
            try:
                changes[name] = parse(form[name])
            except ValueError as exc:
                errors.append(FieldError(name, str(exc)))
    if "required_capabilities" in form:
        try:
            changes["required_capabilities"] = _required(
                form["required_capabilities"], capabilities
            )
        except ValueError as exc:
            errors.append(FieldError("required_capabilities", str(exc)))
    if errors:
        raise RoutingFormError(errors)
    return replace(current, **changes)  # type: ignore[arg-type]


def format_capabilities(names: Iterable[str]) -> str:
    """The form's text for `required_capabilities`."""
    return ", ".join(names)


def format_priority(rules: Iterable[PriorityRule]) -> str:
    """The form's text for `worker_priority`: one "adapter_type=priority" a line."""
    return "\n".join(f"{r.adapter_type}={r.priority}" for r in rules)


def _strategy(raw: str) -> Strategy:
    value = raw.strip()
    try:
        return Strategy(value)
    except ValueError:
        allowed = ", ".join(s.value for s in Strategy)
        raise ValueError(f"unknown strategy {value!r} (one of: {allowed})") from None


def _flag(raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{raw!r} is not a yes/no value (true or false)")


def _resident_weight(raw: str) -> float:
    text = raw.strip()
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number (e.g. 0.8)") from None
    if not math.isfinite(value) or not 0.0 <= value <= MAX_RESIDENT_WEIGHT:
        raise ValueError(f"{text} is out of range: 0 to {MAX_RESIDENT_WEIGHT:g}")
    return value


def _overflow_threshold(raw: str) -> int:
    text = raw.strip()
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number (e.g. 5)") from None
    if not 0 <= value <= MAX_OVERFLOW_THRESHOLD:
        raise ValueError(f"{value} is out of range: 0 to {MAX_OVERFLOW_THRESHOLD}")
    return value


def _required(raw: str, known: frozenset[str]) -> tuple[str, ...]:
    names: list[str] = []
    for part in raw.split(","):
        name = part.strip()
        if name and name not in names:
            names.append(name)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(
            f"unknown capability {', '.join(repr(n) for n in unknown)}"
            f" (known: {', '.join(sorted(known))})"
        )
    return tuple(names)


def _worker_priority(raw: str) -> tuple[PriorityRule, ...]:
    rules: list[PriorityRule] = []
    problems: list[str] = []
    for number, line in enumerate(raw.splitlines(), start=1):
        text = line.strip()
        if not text:
            continue
        adapter, sep, priority_text = (s.strip() for s in text.partition("="))
        if not sep or not _ADAPTER_TYPE.match(adapter):
            problems.append(f"line {number} {text!r} is not adapter_type=priority")
            continue
        try:
            priority = int(priority_text)
        except ValueError:
            problems.append(f"line {number}: priority {priority_text!r} is not a whole number")
            continue
        if not 1 <= priority <= MAX_PRIORITY:
            problems.append(
                f"line {number}: priority {priority} is out of range: 1 to {MAX_PRIORITY}"
            )
            continue
        if any(r.adapter_type == adapter for r in rules):
            problems.append(f"line {number}: {adapter!r} is listed twice")
            continue
        rules.append(PriorityRule(adapter, priority))
    if problems:
        raise ValueError("; ".join(problems))
    return tuple(rules)
