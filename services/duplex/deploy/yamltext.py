"""YAML as the generated files write it, and the digests that tie a service to its files."""

from __future__ import annotations

import hashlib
from typing import Any

import yaml


class Flow(list[str]):
    """A list written on one line (a command, a healthcheck's test)."""


class _Dumper(yaml.SafeDumper):
    """Lists indented under their key (as people write compose files); no anchors: a value
    shared by several services is written out in each."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _flow_list(dumper: yaml.SafeDumper, data: Flow) -> yaml.Node:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)


_Dumper.add_representer(Flow, _flow_list)


def dump_yaml(data: Any) -> str:
    """Block-style YAML (Flow lists on one line), keys in the order built, no line folding."""
    text: str = yaml.dump(
        data,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        width=1000,
        allow_unicode=True,
    )
    return text


def digest(text: str) -> str:
    """A short, stable digest of a file's content (a label on the service that mounts it)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
