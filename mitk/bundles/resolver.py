"""Build the parts of a bundle config mitk needs, from the allow-list only.

A value is a literal, an ``@`` reference to another key (``@image_key``, ``@network_def#channels``), a ``$``
expression in the subset of :mod:`.expressions`, or a ``{"_target_": ...}`` component whose name is on the
allow-list of :mod:`.targets`. ``_disabled_`` (also a reference) drops a component; ``_requires_`` and ``_desc_``
are ignored; ``_mode_`` other than ``default`` and ``%`` macros (which read other files) are refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mitk.bundles.expressions import evaluate
from mitk.bundles.targets import DROPPED, NETWORKS, load_target, target_name
from mitk.errors import CheckpointError

_DISABLED = object()
IGNORED_KEYS = ("_requires_", "_desc_")


class SafeResolver:
    """Resolves keys of one config (``inference.json`` as parsed JSON) without running any of its code."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config
        self._resolving: list[str] = []

    def raw(self, key: str) -> Any:
        """The unresolved value at ``key`` (``a#b#0`` or ``a::b``), or a refusal naming the key."""
        node: Any = self.config
        for part in key.replace("::", "#").split("#"):
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise CheckpointError(f"{key}: no such key in the bundle config")
        return node

    def has(self, key: str) -> bool:
        try:
            self.raw(key)
        except CheckpointError:
            return False
        return True

    def value(self, key: str) -> Any:
        """``key`` with references and expressions resolved; components stay as dictionaries (not built)."""
        return self._resolve(self.raw(key), key, build=False)

    def build(self, key: str) -> Any:
        """``key`` resolved, with its allow-listed components instantiated."""
        return self._resolve(self.raw(key), key, build=True)

    def resolve(self, node: Any, key: str) -> Any:
        """A value from outside the config (e.g. one step of it) resolved as if at ``key``; nothing is built."""
        return self._resolve(node, key, build=False)

    def reference(self, name: str) -> Any:
        if name in self._resolving:
            raise CheckpointError(f"{name}: circular reference ({' → '.join([*self._resolving, name])})")
        self._resolving.append(name)
        try:
            return self._resolve(self.raw(name), name, build=True)
        finally:
            self._resolving.pop()

    def _resolve(self, node: Any, key: str, *, build: bool) -> Any:
        if isinstance(node, str):
            if node.startswith("@"):
                return self.reference(node[1:])
            if node.startswith("$"):
                return evaluate(node[1:], key, self.reference)
            if node.startswith("%"):
                raise CheckpointError(f"{key}: {node!r} reads another file, which mitk does not follow")
            return node
        if isinstance(node, list):
            items = [self._resolve(item, f"{key}#{n}", build=build) for n, item in enumerate(node)]
            return [item for item in items if item is not _DISABLED]
        if isinstance(node, Mapping):
            if "_target_" in node:
                return self._component(node, key, build=build)
            return {k: self._resolve(v, f"{key}#{k}", build=build) for k, v in node.items()
                    if k not in IGNORED_KEYS}
        return node

    def _component(self, node: Mapping[str, Any], key: str, *, build: bool) -> Any:
        name = target_name(node["_target_"], f"{key}#_target_")
        if name in DROPPED:
            raise CheckpointError(f"{key}: {name} is mitk's own step, taken only from a preprocessing Compose")
        mode = node.get("_mode_", "default")
        if mode != "default":
            raise CheckpointError(f"{key}#_mode_: {mode!r} is refused (mitk only builds components)")
        if "_disabled_" in node and self._resolve(node["_disabled_"], f"{key}#_disabled_", build=False):
            return _DISABLED
        arguments = {k: self._resolve(v, f"{key}#{k}", build=build) for k, v in node.items()
                     if k not in ("_target_", "_mode_", "_disabled_", "transforms", *IGNORED_KEYS)}
        if "transforms" in node:
            transforms = node["transforms"]
            if name == "Compose" and isinstance(transforms, list):  # keys keep their places in the file
                kept = [self._resolve(t, f"{key}#transforms#{n}", build=build) for n, t in enumerate(transforms)
                        if not _dropped(t, f"{key}#transforms#{n}")]
                arguments["transforms"] = [t for t in kept if t is not _DISABLED]
            else:
                arguments["transforms"] = self._resolve(transforms, f"{key}#transforms", build=build)
        asked = [k for k, v in arguments.items() if "pretrain" in k.lower() and v not in (False, None, "", 0)]
        if name in NETWORKS and asked:
            raise CheckpointError(f"{key}#{asked[0]}: would download pretrained weights; refused (the bundle's "
                                  "own models/model.pt holds its weights)")
        if not build:
            return {"_target_": name, **arguments}
        try:
            return load_target(name)(**arguments)
        except Exception as error:
            raise CheckpointError(f"{key}: {name} could not be built: {error}") from None


def _dropped(transform: Any, key: str) -> bool:
    """A reading or channel-first step, which mitk does itself."""
    return isinstance(transform, Mapping) and "_target_" in transform and \
        target_name(transform["_target_"], f"{key}#_target_") in DROPPED
