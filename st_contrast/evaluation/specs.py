"""Task specs: the strings and dicts that name evaluation tasks on the command line and in YAML configs."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

from mteb.abstasks.abstask import AbsTask

from st_contrast.evaluation.errors import DataFormatError, TaskSpecError
from st_contrast.evaluation.image_retrieval import image_retrieval_task_from_file
from st_contrast.evaluation.retrieval import retrieval_task_from_beir
from st_contrast.evaluation.rng import preserved_rng_state
from st_contrast.evaluation.sts import sts_task_from_file
from st_contrast.evaluation.zeroshot import zeroshot_task_from_file

__all__ = ["SPEC_KEYS", "TaskSpec", "resolve_task", "resolve_tasks"]

TaskSpec = Union[str, Mapping[str, Any], AbsTask]  # noqa: UP007 -- a runtime alias, kept valid on Python 3.10

SPEC_KEYS: dict[str, dict[str, str]] = {
    "sts": {
        "type": "'sts'",
        "path": "STS file: header sentence1/sentence2/score (csv or tsv), or the STS benchmark layout; gz or not",
        "name": "task name (default '<parent dir>-<file stem>', e.g. 'stsbenchmark-test')",
        "split": "split name to report the results under (default 'test')",
        "min_score": "lowest valid gold score (default 0)",
        "max_score": "highest valid gold score (default 5)",
        "languages": "language-script codes (default ['eng-Latn'])",
        "prompt": "instruction prompt for instruction-tuned models (string or {query, document})",
    },
    "retrieval": {
        "type": "'retrieval'",
        "path": "BEIR directory: corpus.jsonl, queries.jsonl, qrels/<split>.tsv (each gz or not)",
        "name": "task name (default: the directory name)",
        "split": "which qrels/<split>.tsv to evaluate (default 'test')",
        "languages": "language-script codes (default ['eng-Latn'])",
        "prompt": "instruction prompt(s) for instruction-tuned models (string or {query, document})",
    },
    "zeroshot": {
        "type": "'zeroshot'",
        "path": "data file (jsonl, csv, parquet...): an image column (paths relative to the file) and a label column",
        "name": "task name (default '<parent dir>-<file stem>', e.g. 'digits-test')",
        "template": "prompt template with {} for the class name (default '{}'), e.g. 'a handwritten digit {}'",
        "classes": "the class names in order (default: the distinct labels, sorted)",
        "image_column": "the image column (default 'image')",
        "label_column": "the class-name column (default 'label')",
        "split": "split name to report the results under (default 'test')",
    },
    "image_retrieval": {
        "type": "'image_retrieval'",
        "path": "data file (jsonl, csv, parquet...) with an image column (paths relative to the file) and captions",
        "name": "task name (default '<parent dir>-<file stem>-<direction>')",
        "direction": "'t2i' (captions retrieve images, default) or 'i2t' (images retrieve captions)",
        "image_column": "the image column (default 'image')",
        "text_column": "the caption column (default 'caption')",
        "split": "split name to report the results under (default 'test')",
    },
    "mteb": {
        "type": "'mteb'",
        "name": "an MTEB task name, e.g. 'STSBenchmark' (its data comes from the Hugging Face hub)",
        "languages": "keep only these languages (e.g. ['eng'])",
        "splits": "keep only these splits (e.g. ['test'])",
    },
}
"""The keys a dict spec may have, per ``type``, with what each means."""

_STRING_FORMS = (
    "'sts:PATH' (an STS file), 'retrieval:DIR' (a BEIR directory), 'zeroshot:FILE' / 'image_retrieval:FILE' (image "
    "data files), each optionally named as 'NAME=sts:PATH', 'mteb:NAME' or a bare MTEB task name such as "
    "'STSBenchmark'"
)
_FILE_KINDS = ("sts", "retrieval", "zeroshot", "image_retrieval")


def _resolve_path(path: Any, base_dir: str | Path | None, spec: Any) -> Path:
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise TaskSpecError(f"task spec {spec!r}: 'path' must be a file or directory path, got {path!r}")
    path = Path(path).expanduser()
    if base_dir is not None and not path.is_absolute():
        path = Path(base_dir) / path
    return path


def _named_task(name: str, languages: Sequence[str] | None = None, splits: Sequence[str] | None = None) -> AbsTask:
    import mteb

    try:
        return mteb.get_task(name, languages=languages, eval_splits=splits)
    except KeyError as error:
        hint = str(error).strip("'\"")
        looks_local = os.sep in name or Path(name).exists()
        local = (
            f" '{name}' looks like a path: write 'sts:{name}' for an STS file or 'retrieval:{name}' for a BEIR"
            " directory."
            if looks_local
            else ""
        )
        raise TaskSpecError(
            f"unknown task {name!r}: not an MTEB task name ({hint}).{local} Accepted forms: {_STRING_FORMS}."
        ) from None


def _from_string(spec: str, base_dir: str | Path | None) -> AbsTask:
    name, equals, named = spec.partition("=")
    if equals and named.partition(":")[0] in _FILE_KINDS and ":" not in name:  # 'NAME=sts:PATH'
        if not name.strip():
            raise TaskSpecError(f"task spec {spec!r} gives an empty name before '='")
        spec = named
    else:
        name = None
    kind, sep, rest = spec.partition(":")
    if sep and kind in (*_FILE_KINDS, "mteb"):
        if not rest:
            raise TaskSpecError(f"task spec {spec!r} names no {'task' if kind == 'mteb' else 'path'} after '{kind}:'")
        if kind == "mteb":
            return _named_task(rest)
        return _from_dict({"type": kind, "path": rest, **({"name": name.strip()} if name else {})}, base_dir)
    return _named_task(spec)


def _from_dict(spec: Mapping[str, Any], base_dir: str | Path | None) -> AbsTask:
    kind = spec.get("type")
    if kind not in SPEC_KEYS:
        raise TaskSpecError(f"task spec {dict(spec)!r}: 'type' must be one of {sorted(SPEC_KEYS)}, got {kind!r}")
    unknown = sorted(set(spec) - set(SPEC_KEYS[kind]))
    if unknown:
        raise TaskSpecError(
            f"task spec {dict(spec)!r}: unknown keys {unknown} for type {kind!r}; allowed: {sorted(SPEC_KEYS[kind])}"
        )
    options = {key: value for key, value in spec.items() if key not in ("type", "path")}
    for key in ("languages", "splits"):  # a single value is a one-element list (YAML `languages: eng-Latn`)
        if isinstance(options.get(key), str):
            options[key] = [options[key]]
    if kind == "mteb":
        if not isinstance(spec.get("name"), str):
            raise TaskSpecError(f"task spec {dict(spec)!r}: type 'mteb' needs a 'name', e.g. 'STSBenchmark'")
        return _named_task(spec["name"], options.get("languages"), options.get("splits"))
    if "path" not in spec:
        raise TaskSpecError(f"task spec {dict(spec)!r}: type {kind!r} needs a 'path'")
    path = _resolve_path(spec["path"], base_dir, spec)
    try:
        if kind == "sts":
            return sts_task_from_file(path, **options)
        if kind == "zeroshot":
            return zeroshot_task_from_file(path, **options)
        if kind == "image_retrieval":
            return image_retrieval_task_from_file(path, **options)
        return retrieval_task_from_beir(path, **options)
    except DataFormatError:
        raise
    except (TypeError, ValueError) as error:  # a bad option value (a list where a name is expected, a bad template)
        raise TaskSpecError(f"task spec {dict(spec)!r}: {error}") from None


def resolve_task(spec: TaskSpec, base_dir: str | Path | None = None) -> AbsTask:
    """Build the MTEB task a spec names. Local files are read (and checked) now; named MTEB tasks load later.

    Specs:

    - ``"sts:PATH"``: an STS file (:func:`~st_contrast.evaluation.sts_task_from_file`);
    - ``"retrieval:DIR"``: a BEIR directory, split ``test`` (:func:`~st_contrast.evaluation.retrieval_task_from_beir`);
    - ``"zeroshot:FILE"``: zero-shot image classification over a data file with ``image`` and ``label`` columns
      (:func:`~st_contrast.evaluation.zeroshot_task_from_file`; the dict form sets ``template``);
    - ``"image_retrieval:FILE"``: text -> image retrieval over captioned images
      (:func:`~st_contrast.evaluation.image_retrieval_task_from_file`; ``direction: i2t`` for image -> text);
    - ``"NAME=sts:PATH"`` (any of the four file forms above): the same task, named ``NAME`` instead of after its
      file (two files of the same name, e.g. two ``test.tsv.gz``, need distinct names);
    - ``"mteb:NAME"`` or a bare ``"NAME"``: the MTEB task of that name; its data comes from the Hugging Face hub;
    - a dict with a ``type`` key (``sts``, ``retrieval`` or ``mteb``) and the keys listed in :data:`SPEC_KEYS`,
      e.g. ``{"type": "sts", "path": "data/sts/test.tsv.gz", "name": "stsb"}`` (the form YAML configs use);
    - an already built MTEB task, returned as is.

    Args:
        spec: The spec.
        base_dir: Directory that relative ``path`` values of dict specs are relative to (e.g. the directory of
            the YAML config naming them); default the current directory. String specs are always relative to
            the current directory.

    Raises:
        TaskSpecError: The spec names no task (unknown MTEB name, unknown type or key, missing path).
        FileNotFoundError / DataFormatError: The local file or directory is missing or malformed.
    """
    with preserved_rng_state():  # MTEB task constructors reseed the global generators
        if isinstance(spec, AbsTask):
            return spec
        if isinstance(spec, str):
            return _from_string(spec, None)
        if isinstance(spec, Mapping):
            return _from_dict(spec, base_dir)
    raise TaskSpecError(f"a task spec must be a string, a dict or an MTEB task, got {type(spec).__name__}: {spec!r}")


def resolve_tasks(specs: Sequence[TaskSpec] | TaskSpec, base_dir: str | Path | None = None) -> list[AbsTask]:
    """:func:`resolve_task` for each spec (a single spec is accepted too); task names must be unique."""
    if isinstance(specs, (str, Mapping, AbsTask)):
        specs = [specs]
    tasks = [resolve_task(spec, base_dir) for spec in specs]
    names = [task.metadata.name for task in tasks]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise TaskSpecError(
            f"two tasks are named {duplicates}: give them distinct names ('NAME=sts:PATH' on the command line, "
            "the 'name' key of a dict spec)"
        )
    if not tasks:
        raise TaskSpecError(f"no tasks given; name at least one: {_STRING_FORMS}")
    return tasks
