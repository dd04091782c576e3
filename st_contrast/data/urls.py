"""Data locations as fsspec URLs (``s3://``, ``gs://``, ``hf://``, ``http(s)://``, ``file://``, local paths), and
the errors of reading them as one line naming the URL.

Credentials and endpoints come from each filesystem's usual environment (``AWS_ENDPOINT_URL`` /
``AWS_ACCESS_KEY_ID`` / ``AWS_PROFILE`` for S3 and S3-compatible servers such as MinIO, R2 or moto;
``GOOGLE_APPLICATION_CREDENTIALS`` for GCS; ``HF_TOKEN`` for the hub), or from a dataset's ``storage_options``.
A dataset's options also serve the other URLs of its bucket that are read later, per batch (the images its rows name,
tar shards indexed by byte range): :func:`register_storage_options`.
"""

from __future__ import annotations

import glob as local_glob
import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import IO, Any

from st_contrast.data.columns import DataError
from st_contrast.data.records import GZIP_ERRORS
from st_contrast.data.spec import _is_url

__all__ = [
    "expand_braces",
    "expand_url",
    "is_url",
    "join_url",
    "open_url",
    "reading",
    "register_storage_options",
    "url_filesystem",
]

logger = logging.getLogger(__name__)

_BUCKET_OPTIONS: dict[str, dict[str, Any]] = {}

_PACKAGES = {
    "s3": "s3fs",
    "s3a": "s3fs",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "az": "adlfs",
    "abfs": "adlfs",
    "hf": "huggingface_hub",
}


def is_url(path: str) -> bool:
    """Whether ``path`` is a URL (``scheme://...``) rather than a local path."""
    return _is_url(str(path))


def expand_braces(pattern: str) -> list[str]:
    """contrastors' ``bucket`` patterns: ``shard-{00000..00003}.jsonl.gz`` -> the 4 names (zero padding kept)."""
    match = re.search(r"\{(\d+)\.\.(\d+)\}", pattern)
    if not match:
        return [pattern]
    first, last = match.group(1), match.group(2)
    width = len(first) if first.startswith("0") else 0
    head, tail = pattern[: match.start()], pattern[match.end() :]
    return [
        name for number in range(int(first), int(last) + 1) for name in expand_braces(f"{head}{number:0{width}d}{tail}")
    ]


def _bucket(url: str) -> str:
    """``protocol://bucket`` of a URL (the first path component: the S3 / GCS bucket, the host of an HTTP URL)."""
    protocol, _, rest = url.partition("://")
    return f"{protocol}://{rest.split('/', 1)[0]}"


def register_storage_options(url: str, storage_options: Mapping[str, Any]) -> None:
    """Read the URLs of ``url``'s bucket with ``storage_options`` wherever no options are passed (this process, and
    data-loader workers forked after it): a dataset's endpoint and credentials then reach the images its rows name
    and the byte ranges of its tar shards, read when a batch is built. Nothing is stored on disk.

    The latest options of a bucket win (a dataset loaded again with corrected options); replacing different ones is
    logged, since two datasets of one bucket with different options would read each other's images with them.
    """
    if not storage_options or not is_url(url):
        return
    bucket = _bucket(url)
    options = dict(storage_options)
    if _BUCKET_OPTIONS.get(bucket, options) != options:
        logger.warning("storage_options for %s replaced: images there are now read with those of %s.", bucket, url)
    _BUCKET_OPTIONS[bucket] = options


def url_filesystem(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    """``(filesystem, path inside it)`` for ``url``; a protocol whose package is missing names the package. Without
    ``storage_options``, those registered for its bucket (:func:`register_storage_options`) apply, if any."""
    import fsspec

    protocol = url.split("://", 1)[0] if is_url(url) else "file"
    if storage_options is None and is_url(url):
        storage_options = _BUCKET_OPTIONS.get(_bucket(url))
    try:
        return fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    except ImportError as error:
        package = _PACKAGES.get(protocol, f"the fsspec implementation of {protocol}://")
        raise DataError(f"{url}: reading {protocol}:// URLs needs {package} (pip install {package}).") from error
    except ValueError as error:
        raise DataError(f"{url}: not a URL fsspec can read ({error}).") from error


def join_url(base: str, name: str) -> str:
    """``base/name`` for URLs and local paths alike."""
    return base.rstrip("/") + "/" + name


def describe_access_error(url: str, error: BaseException) -> DataError:
    """A one-line :class:`DataError` naming ``url`` for what reading it raised."""
    text = " ".join(str(error).split()) or type(error).__name__
    name = type(error).__name__
    lowered = text.lower()
    if isinstance(error, FileNotFoundError) or name in ("NoSuchKey", "NoSuchBucket", "EntryNotFoundError"):
        if "bucket" in lowered:
            return DataError(f"{url}: the bucket does not exist ({text}). Check the URL and the endpoint.")
        return DataError(f"{url}: no such file or object. Check the URL (and counts.json's shard names).")
    if isinstance(error, PermissionError) or "accessdenied" in lowered.replace(" ", "") or "forbidden" in lowered:
        return DataError(
            f"{url}: access denied ({text}). Check the credentials the environment gives (AWS_ACCESS_KEY_ID / "
            "AWS_PROFILE, GOOGLE_APPLICATION_CREDENTIALS, HF_TOKEN) or the dataset's storage_options."
        )
    if "credential" in lowered:
        return DataError(f"{url}: no credentials to read it ({text}). Set them in the environment or storage_options.")
    return DataError(f"{url}: cannot be read ({name}: {text}).")


@contextmanager
def reading(url: str) -> Iterator[None]:
    """Turn what opening or reading ``url`` raises (a missing bucket or object, denied access, a network error) into a
    :class:`DataError` naming it; :class:`DataError` passes unchanged."""
    try:
        yield
    except (DataError, *GZIP_ERRORS):  # a damaged gzip stream is the file's problem: its reader names it
        raise
    except (OSError, ValueError, RuntimeError) as error:
        raise describe_access_error(url, error) from error
    except Exception as error:  # botocore / aiohttp / hub client errors have their own hierarchies
        if type(error).__module__.split(".")[0] in ("botocore", "aiobotocore", "aiohttp", "huggingface_hub", "gcsfs"):
            raise describe_access_error(url, error) from error
        raise


def open_url(fs: Any, path: str, url: str, block_size: int | None = None) -> IO[bytes]:
    """Open ``path`` of ``fs`` for reading bytes, errors naming ``url``."""
    with reading(url):
        kwargs = {"block_size": block_size} if block_size else {}
        return fs.open(path, "rb", **kwargs)


def expand_url(url: str, fs: Any, path: str) -> list[str]:
    """The paths inside ``fs`` that ``url`` names: brace ranges expanded, globs matched (sorted); plain paths as
    they are (their existence is checked when they are read)."""
    paths = expand_braces(path)
    found: list[str] = []
    for candidate in paths:
        if local_glob.has_magic(candidate):
            with reading(url):
                matches = sorted(fs.glob(candidate))
            if not matches:
                raise DataError(f"{url}: no file matches {candidate!r}.")
            found.extend(matches)
        else:
            found.append(candidate)
    return found
