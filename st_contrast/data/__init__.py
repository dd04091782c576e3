"""Training data for contrastive learning: loaders, mixtures with prompts, sample indices and batch samplers.

- :class:`DatasetSpec` / :func:`load_dataset_spec`: hub ids, ``save_to_disk`` folders, parquet / JSON Lines / CSV /
  TSV files (``.gz`` too) and contrastors shard folders, with column selection, paired / triplet objectives and
  contrastors-style query / document prefixes; bad data raises :class:`DataError` naming file and row.
- :func:`load_contrastors_shards` / :func:`index_contrastors_shards`: ``*.jsonl.gz`` + ``counts.json`` +
  ``offsets.json.gz`` folders, streamed shard by shard into a memory-mapped Arrow cache.
- :func:`build_training_data`: one dataset or a ``DatasetDict`` mixture, the trainer's ``prompts``, ``num_samples``;
  a :class:`StreamingDataset` when the datasets stream (fsspec URLs: ``s3://``, ``gs://``, ``hf://``, ``https://``).
- :class:`StreamingDataset`: streamed datasets, one dataset per global batch, disjoint rows per rank, bounded
  shuffling, an exact position for checkpoints; :class:`BadRows`: the rows ``on_bad_rows: skip`` left out.
- :func:`add_sample_index`: global row indices as the label column, for GloFND / GlobalContrastiveLoss.
- :class:`SingleDatasetBatchSampler`: every step's global batch from one dataset, identical on all ranks.
- :class:`TokenBudgetBatchSampler`: length-grouped batches under a token budget, optionally without duplicates.
- Image columns (``image_columns``, webdataset ``*.tar`` shards, streamed too: :mod:`st_contrast.data.stream_tar`,
  :func:`index_tar_shards` writes their ``sizes.json``, :func:`write_tar_shards` writes a table as shards):
  references decoded per batch by :class:`ImageTextDataCollator`; :mod:`st_contrast.data.synthetic_images` writes
  offline image-text sets.
- :class:`SamplerEpochCallback`: keeps the samplers' epoch right when a multi-process run resumes.
"""

from __future__ import annotations

from st_contrast.data.bad_rows import BadRows
from st_contrast.data.columns import BadRowError, DataError
from st_contrast.data.contrastors import index_contrastors_shards, load_contrastors_shards
from st_contrast.data.image_collator import ImageTextDataCollator
from st_contrast.data.image_shards import load_image_shards
from st_contrast.data.images import decode_image
from st_contrast.data.loading import load_dataset_spec
from st_contrast.data.mixture import SAMPLE_INDEX_COLUMN, TrainingData, add_sample_index, build_training_data
from st_contrast.data.shard_writer import write_tar_shards
from st_contrast.data.single_dataset import (
    SamplerEpochCallback,
    SingleDatasetBatchSampler,
    resolve_world_size,
    set_sampler_epoch,
)
from st_contrast.data.spec import DatasetSpec, normalize_prefix
from st_contrast.data.stream_tar import index_tar_shards
from st_contrast.data.streaming import StreamingDataset, gather_bad_rows
from st_contrast.data.token_budget import TokenBudgetBatchSampler

__all__ = [
    "SAMPLE_INDEX_COLUMN",
    "BadRowError",
    "BadRows",
    "DataError",
    "DatasetSpec",
    "ImageTextDataCollator",
    "SamplerEpochCallback",
    "SingleDatasetBatchSampler",
    "StreamingDataset",
    "TokenBudgetBatchSampler",
    "TrainingData",
    "add_sample_index",
    "build_training_data",
    "decode_image",
    "gather_bad_rows",
    "index_contrastors_shards",
    "index_tar_shards",
    "load_contrastors_shards",
    "load_dataset_spec",
    "load_image_shards",
    "normalize_prefix",
    "resolve_world_size",
    "set_sampler_epoch",
    "write_tar_shards",
]
