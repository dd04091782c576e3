"""A streamed source read once, in file order, into a memory-mapped Arrow dataset, bad rows raised or skipped.

:func:`~st_contrast.data.load_dataset_spec` uses it for URLs (an evaluation probe on S3, ``stream: false``) and for
``on_bad_rows: skip`` on local JSON Lines / CSV / TSV files and contrastors shards, whose lines must be read one by
one to leave the bad ones out. The Arrow file is cached under a key made of the files' sizes and modification times
(or ETags) and the column plan; the skipped-row counts are stored beside it, so a cached load reports them too.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets

from st_contrast.data.bad_rows import BadRows
from st_contrast.data.columns import BadRowError, DataError
from st_contrast.data.images import IMAGE_REFERENCE, is_image_reference
from st_contrast.data.quiet import quiet_datasets
from st_contrast.data.spec import DatasetSpec
from st_contrast.data.stream_files import iter_file_rows
from st_contrast.data.stream_sources import StreamFile, StreamSource, open_stream_source
from st_contrast.data.urls import reading

__all__ = ["load_stream_into_cache", "load_text_files_skipping", "read_source_into_cache"]

_PENDING: dict[str, tuple[StreamSource, Path]] = {}


def load_stream_into_cache(
    spec: DatasetSpec, cache_dir: str | None = None, bad_rows: BadRows | None = None
) -> datasets.Dataset:
    """The dataset of ``spec`` (a URL, or a local folder / pattern of shards) read into the Arrow cache."""
    return read_source_into_cache(open_stream_source(spec), cache_dir, bad_rows)


def load_text_files_skipping(
    files: list[str], spec: DatasetSpec, cache_dir: str | None, bad_rows: BadRows
) -> datasets.Dataset:
    """Local JSON Lines / CSV / TSV ``files`` read line by line, bad rows left out and counted in ``bad_rows``."""
    import fsspec

    fs = fsspec.filesystem("file")
    streamed = [StreamFile(file, os.path.abspath(file), _kind(file), file.lower().endswith(".gz")) for file in files]
    if len({file.kind for file in streamed}) > 1:
        raise DataError(f"Dataset {spec.name!r} mixes file formats; give one format per dataset.")
    return read_source_into_cache(StreamSource(spec, fs, streamed), cache_dir, bad_rows)


def _kind(file: str) -> str:
    from st_contrast.data.records import text_format

    return text_format(file) or "json"


def _fingerprint(source: StreamSource) -> str:
    parts: list[Any] = [
        source.name,
        repr(source.plan),
        source.spec.max_rows,
        source.spec.on_bad_rows,
        source.spec.objective,
    ]
    for file in source.files:
        with reading(file.url):
            info = source.fs.info(file.path)
        stamp = info.get("mtime") or info.get("LastModified") or info.get("ETag") or info.get("last_modified")
        parts.append((file.url, info.get("size"), str(stamp), file.rows))
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:32]


def _rows(token: str) -> Iterator[dict[str, Any]]:
    source, report = _PENDING[token]
    bad = BadRows(source.name)
    limit, seen = source.spec.max_rows, 0
    for index, file in enumerate(source.files):
        for _, item in iter_file_rows(source, index, 0, file.rows):
            if limit is not None and seen >= limit:
                break
            seen += 1
            if isinstance(item, BadRowError):
                if source.spec.on_bad_rows == "raise":
                    raise item
                bad.add(item)
                continue
            yield {key: _without_readable_bytes(value) for key, value in item.items()}
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(bad.as_dict()), encoding="utf8")


def _without_readable_bytes(value: Any) -> Any:
    """An image reference without the bytes its file or URL still holds (checked ones, ``on_bad_rows: skip``): the
    cache keeps where the images are, not copies of them."""
    if is_image_reference(value) and value.get("image_path"):
        return {**value, "image_bytes": None}
    return value


def read_source_into_cache(
    source: StreamSource, cache_dir: str | None = None, bad_rows: BadRows | None = None
) -> datasets.Dataset:
    """Every row of ``source`` in file order (cut at ``max_rows``) as a memory-mapped ``datasets.Dataset``; bad rows
    raise (``on_bad_rows: raise``) or are counted into ``bad_rows``."""
    fingerprint = _fingerprint(source)
    root = Path(cache_dir or datasets.config.HF_DATASETS_CACHE)
    report = root / "st_contrast_bad_rows" / f"{fingerprint}.json"
    features = None
    if source.plan.label_source is None:
        images = source.plan.image_targets
        features = datasets.Features(
            {
                column: IMAGE_REFERENCE if column in images else datasets.Value("string")
                for column in source.plan.output_columns
            }
        )
    token = fingerprint
    _PENDING[token] = (source, report)
    try:
        dataset = _from_generator(token, features, cache_dir, fingerprint)
        if not report.is_file():  # a cached Arrow file without its counts (removed by hand): read again
            dataset = _from_generator(token, features, cache_dir, f"{fingerprint}-{os.getpid()}")
    except datasets.exceptions.DatasetGenerationError as error:
        cause = error.__cause__ or error.__context__
        if isinstance(cause, DataError):  # datasets wraps the generator's errors: surface ours unchanged
            raise cause from None
        raise
    finally:
        _PENDING.pop(token, None)
    if bad_rows is not None:
        bad_rows.merge(json.loads(report.read_text(encoding="utf8")))
    if len(dataset) == 0:
        raise DataError(f"Dataset {source.name!r} ({source.files[0].url}) has no good rows.")
    return dataset


def _from_generator(token: str, features: Any, cache_dir: str | None, fingerprint: str) -> datasets.Dataset:
    with quiet_datasets():
        return datasets.Dataset.from_generator(
            _rows, features=features, cache_dir=cache_dir, gen_kwargs={"token": token}, fingerprint=fingerprint
        )
