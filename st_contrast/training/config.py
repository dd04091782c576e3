"""The YAML run configuration of ``st-contrast train``: loading, ``--set`` overrides and validation.

A configuration has these sections (see ``examples/configs/quickstart.yaml`` for a commented one)::

    output_dir: runs/quickstart      # checkpoints, the final model, config.yaml, metrics.json, logs
    seed: 12
    resume: auto                     # auto: continue from the newest checkpoint of output_dir; false: refuse to
                                     # start over a directory that has checkpoints
    model: {...}                     # st_contrast.training.builders.build_model
    adapters: {...}                  # optional: bitfit / lora / freeze
    loss: {...}                      # st_contrast.training.builders.build_loss
    data: {...}                      # st_contrast.data specs, batch sampler, sample index
    training: {...}                  # SentenceTransformerTrainingArguments keyword arguments
    evaluation: {...}                # st_contrast.evaluation tasks, scored before and after training
    monitoring: {...}                # st_contrast.callbacks: JSONL logs, throughput/MFU (on unless enabled: false),
                                     # geometry probe, weight spectrum

Relative paths in the configuration are relative to the current working directory.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

__all__ = ["SECTIONS", "ConfigError", "apply_overrides", "dump_config", "load_config", "read_yaml", "validate_config"]

# section -> allowed keys (None: free-form keyword arguments checked by the component they configure)
SECTIONS: dict[str, set[str] | None] = {
    "output_dir": None,
    "seed": None,
    "resume": None,
    "model": {
        "name_or_path",
        "backbone",
        "attention_backend",
        "max_seq_length",
        "pooling",
        "normalize",
        "bidirectional",
        "model_kwargs",
        "tokenizer_kwargs",
        "device",
    },
    "adapters": {"bitfit", "lora", "freeze"},
    "loss": {"name", "kwargs", "glofnd", "matryoshka"},
    "data": {
        "datasets",
        "batch_sampler",
        "max_tokens",
        "single_dataset_batches",
        "sample_index",
        "no_duplicates",
    },
    "training": None,
    "evaluation": {"tasks", "before", "after", "batch_size"},
    "monitoring": {"enabled", "probe", "spectrum_every", "spectrum_patterns", "peak_flops"},
}
REQUIRED = ("output_dir", "model", "loss", "data")


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


class ConfigError(ValueError):
    """A configuration that cannot be run; the message names the key and the fix."""


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Read a YAML configuration, apply ``key.sub=value`` overrides and validate it.

    Args:
        path: The YAML file.
        overrides: ``--set`` strings; the value is parsed as YAML (``training.max_steps=10``,
            ``loss.matryoshka.dims=[384,128]``, ``data.datasets.0.max_rows=500``).

    Returns:
        The configuration as a plain dict.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Configuration file {path} does not exist.")
    config = read_yaml(path)
    if not isinstance(config, dict):
        raise ConfigError(f"{path} must hold a mapping of sections ({', '.join(SECTIONS)}), not {type(config)}.")
    config = apply_overrides(config, overrides)
    validate_config(config)
    return config


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


def validate_config(config: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` for unknown sections or keys and missing required sections."""
    if unknown := sorted(set(config) - set(SECTIONS)):
        raise ConfigError(f"Unknown configuration section(s) {unknown}; known: {sorted(SECTIONS)}.")
    if missing := [name for name in REQUIRED if not config.get(name)]:
        raise ConfigError(f"The configuration needs the section(s) {missing}.")
    for section, allowed in SECTIONS.items():
        value = config.get(section)
        if allowed is None or value is None:
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"Section {section!r} must be a mapping, got {value!r}.")
        if unknown := sorted(set(value) - allowed):
            raise ConfigError(f"Unknown key(s) {unknown} in section {section!r}; known: {sorted(allowed)}.")
    if config.get("training") is not None and not isinstance(config["training"], dict):
        raise ConfigError(f"Section 'training' must be a mapping, got {config['training']!r}.")
    if "name_or_path" not in config["model"]:
        raise ConfigError(
            "model.name_or_path is required (a local path, a hub id, or 'minilm' for the packaged model)."
        )
    if "name" not in config["loss"]:
        raise ConfigError("loss.name is required (a class of st_contrast.losses or ST's losses, or 'module:Class').")
    if not config["data"].get("datasets"):
        raise ConfigError("data.datasets must list at least one dataset.")
    if config.get("resume", "auto") not in ("auto", True, False):
        raise ConfigError(f"resume must be 'auto', true or false, not {config['resume']!r}.")
    if (training := config.get("training")) and "output_dir" in training:
        raise ConfigError("Set output_dir at the top level of the configuration, not in 'training'.")


def dump_config(config: dict[str, Any], path: str | Path) -> None:
    """Write the resolved configuration next to the run's outputs."""
    with Path(path).open("w", encoding="utf8") as handle:
        yaml.safe_dump(config, handle, sort_keys=False)
