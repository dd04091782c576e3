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

Names load their modules on first use: reading or streaming data does not import sentence-transformers.
"""

from __future__ import annotations

from st_contrast.lazy_exports import lazy_exports

_LAZY_NAMES = {
    "BadRows": "bad_rows",
    "BadRowError": "columns",
    "DataError": "columns",
    "index_contrastors_shards": "contrastors",
    "load_contrastors_shards": "contrastors",
    "ImageTextDataCollator": "image_collator",
    "load_image_shards": "image_shards",
    "decode_image": "images",
    "load_dataset_spec": "loading",
    "SAMPLE_INDEX_COLUMN": "mixture",
    "TrainingData": "mixture",
    "add_sample_index": "mixture",
    "build_training_data": "mixture",
    "write_tar_shards": "shard_writer",
    "SamplerEpochCallback": "single_dataset",
    "SingleDatasetBatchSampler": "single_dataset",
    "resolve_world_size": "single_dataset",
    "set_sampler_epoch": "single_dataset",
    "DatasetSpec": "spec",
    "normalize_prefix": "spec",
    "index_tar_shards": "stream_tar",
    "StreamingDataset": "streaming",
    "gather_bad_rows": "streaming",
    "TokenBudgetBatchSampler": "token_budget",
}

__all__ = sorted(_LAZY_NAMES)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY_NAMES)
