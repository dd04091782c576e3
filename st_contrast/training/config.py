"""The YAML run configuration of ``st-contrast train``: loading, ``--set`` overrides and validation.

A configuration has these sections (see ``examples/configs/quickstart.yaml`` for a commented one)::

    output_dir: runs/quickstart      # checkpoints, the final model, config.yaml, metrics.json, logs
    seed: 12
    resume: auto                     # auto: continue from the newest checkpoint of output_dir; false: refuse to
                                     # start over a directory that has checkpoints
    model: {...}                     # ModelSpec: the model, packed or not, pooling, bidirectional
    adapters: {...}                  # AdaptersSpec: bitfit / lora / freeze
    loss: {...}                      # LossSpec: a loss class, its kwargs, glofnd, matryoshka
    data: {...}                      # DataSection: st_contrast.data entries, batch sampler, sample index
    training: {...}                  # SentenceTransformerTrainingArguments keyword arguments
    evaluation: {...}                # EvaluationSpec: st_contrast.evaluation tasks, scored before and after
    monitoring: {...}                # MonitoringSpec: JSONL logs, throughput/MFU (on unless enabled: false),
                                     # geometry probe, weight spectrum

Each section is a typed spec in :mod:`st_contrast.training.specs`, validated once when the file is read.

Relative paths in the configuration are relative to the current working directory.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

from st_contrast.training.specs import RunConfig
from st_contrast.training.validation import ConfigError

__all__ = ["ConfigError", "RunConfig", "apply_overrides", "dump_config", "load_config", "read_yaml"]


class _Loader(yaml.SafeLoader):
    """YAML 1.2 scalars: ``2e-5`` is a number and only true/false are booleans (PyYAML's YAML 1.1 reads
    ``2e-5`` as a string and ``no`` / ``on`` as booleans, so ``eval_strategy: no`` would become False)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _parse(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a YAML configuration, apply ``key.sub=value`` overrides and validate every section.

    Args:
        path: The YAML file.
        overrides: ``--set`` strings; the value is parsed as YAML (``training.max_steps=10``,
            ``loss.matryoshka.dims=[384,128]``, ``data.datasets.0.max_rows=500``).

    Returns:
        The validated :class:`~st_contrast.training.specs.RunConfig` (``.raw`` holds the dict as written).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Configuration file {path} does not exist.")
    config = read_yaml(path)
    if not isinstance(config, dict):
        raise ConfigError(f"{path} must hold a mapping of configuration sections, not {type(config).__name__}.")
    return RunConfig.from_dict(apply_overrides(config, overrides))


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file, with 1.2-style floats (``2e-5`` is a number, not a string)."""
    try:
        return _parse(Path(path).read_text(encoding="utf8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from error


def apply_overrides(config: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """A copy of ``config`` with every ``dotted.key=value`` override set (list items by their index)."""
    config = copy.deepcopy(config)
    for override in overrides:
        key, sep, raw_value = override.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value (e.g. training.max_steps=10), got {override!r}.")
        value = _parse(raw_value) if raw_value else None
        parts = key.split(".")
        node: Any = config
        for depth, part in enumerate(parts[:-1]):
            node = _child(node, part, key, create=True)
            if not isinstance(node, dict | list):
                raise ConfigError(f"--set {key}: {'.'.join(parts[: depth + 1])} is a value, not a section.")
        last = parts[-1]
        if isinstance(node, list):
            node[_index(node, last, key)] = value
        else:
            node[last] = value
    return config


def _child(node: Any, part: str, key: str, *, create: bool) -> Any:
    if isinstance(node, list):
        return node[_index(node, part, key)]
    if part not in node or node[part] is None:
        if not create:
            raise ConfigError(f"--set {key}: no {part!r} section.")
        node[part] = {}
    return node[part]


def _index(node: list, part: str, key: str) -> int:
    if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
        raise ConfigError(f"--set {key}: {part!r} is not an index of a list of {len(node)} items.")
    return int(part)


def dump_config(config: dict[str, Any], path: str | Path) -> None:
    """Write the resolved configuration next to the run's outputs."""
    with Path(path).open("w", encoding="utf8") as handle:
        yaml.safe_dump(config, handle, sort_keys=False)


def changed_keys(before: Any, after: Any, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two configurations (``data.datasets.0.max_rows``, ...)."""
    if isinstance(before, dict) and isinstance(after, dict):
        keys = list(before) + [key for key in after if key not in before]
        return [path for key in keys for path in changed_keys(before.get(key), after.get(key), f"{prefix}{key}.")]
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [
            path
            for i, (a, b) in enumerate(zip(before, after, strict=True))
            for path in changed_keys(a, b, f"{prefix}{i}.")
        ]
    return [] if before == after else [prefix.rstrip(".")]
