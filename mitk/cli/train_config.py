"""``mitk train --config FILE``: the training options in a JSON or YAML file.

Precedence, highest first: a flag on the command line (``--set KEY=VALUE`` for one plugin setting), the config
file, then the defaults (the plugin's settings, the data's plan, mitk's option defaults). Keys are the flags'
long names without dashes (``batch_size`` or ``batch-size``); plugin settings go under ``set`` (a mapping, nested
as in ``--set network.channels=[8,16]``). A relative ``data`` path is read from the config file's folder.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

from mitk.errors import UsageError

KINDS: dict[str, tuple[type, ...]] = {
    "plugin": (str,), "data": (str,), "epochs": (int,), "batch_size": (int,), "patch_size": (str, int, list),
    "lr": (float, int), "seed": (int,), "device": (str,), "amp": (bool,), "val_every": (int,),
    "val_fraction": (float, int), "labels": (str, list), "num_workers": (int,), "cache": (bool,),
    "log": (str, list), "set": (dict,), "folds": (int,), "fold": (int,),
}
"""Keys a config file may hold and the JSON/YAML types each takes."""
ALIASES = {"settings": "set", "learning_rate": "lr", "loggers": "log", "validation_fraction": "val_fraction"}


def read_config(path: Path) -> dict[str, Any]:
    """The options of a ``.json``, ``.yaml`` or ``.yml`` file, checked (unknown keys and wrong types refused with a
    one-line error naming the file); YAML needs PyYAML (``pip install "mitk[yaml]"``)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"--config: cannot read it ({error})", path) from None
    if path.suffix.lower() in (".yaml", ".yml"):
        from mitk.extras import require_module

        require_module("yaml", "--config with a YAML file")
        import yaml

        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise UsageError(f"--config: not YAML ({str(error).splitlines()[0]})", path) from None
    else:
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            raise UsageError(f"--config: not JSON ({error.msg}, line {error.lineno}); name a YAML file .yaml",
                             path) from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise UsageError("--config: expected a mapping of option names to values", path)
    options: dict[str, Any] = {}
    for raw_key, value in document.items():
        key = str(raw_key).strip().lstrip("-").replace("-", "_")
        key = ALIASES.get(key, key)
        if key not in KINDS:
            close = difflib.get_close_matches(key, [*KINDS, *ALIASES], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(KINDS)}"
            raise UsageError(f"--config: unknown option {raw_key!r}{hint}", path)
        kinds = KINDS[key]
        if value is not None and (not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)):
            names = " or ".join(k.__name__.replace("str", "text").replace("dict", "mapping") for k in kinds)
            raise UsageError(f"--config: {key} must be {names}, got {value!r}", path)
        options[key] = value
    if isinstance(options.get("data"), str):
        data = Path(options["data"]).expanduser()
        options["data"] = str(data if data.is_absolute() else path.parent / data)
    for key in ("patch_size", "labels", "log"):
        if isinstance(options.get(key), list):
            options[key] = ",".join(str(v) for v in options[key])
    if options.get("log"):
        from mitk.training.log import LOGGERS

        unknown = [n.strip() for n in str(options["log"]).split(",") if n.strip().lower() not in LOGGERS]
        if unknown:
            raise UsageError(f"--config: log takes tensorboard and/or mlflow, not {unknown[0]!r}", path)
    if isinstance(options.get("patch_size"), int):
        options["patch_size"] = str(options["patch_size"])
    return options


def merge_settings(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``, key by key at every depth (``--set network.channels=…`` keeps the file's other
    ``network`` keys)."""
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_settings(merged[key], value)
        else:
            merged[key] = value
    return merged
