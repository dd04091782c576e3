"""The shared base of the local retrieval tasks: columns held in memory, turned into MTEB's datasets on demand."""

from __future__ import annotations

from typing import Any

from datasets import Dataset
from mteb.abstasks.retrieval import AbsTaskRetrieval

__all__ = ["InMemoryRetrievalTask"]


class InMemoryRetrievalTask(AbsTaskRetrieval):
    """An MTEB ``AbsTaskRetrieval`` whose data never touches the hub or a cache directory.

    A subclass sets, before calling ``super().__init__``, ``self._corpus`` and ``self._queries`` (column dicts with
    an ``"id"`` column, as ``Dataset.from_dict`` takes them) and ``self._qrels`` (``{query_id: {doc_id: relevance}}``).
    """

    _corpus: dict[str, list[Any]]
    _queries: dict[str, list[Any]]
    _qrels: dict[str, dict[str, int]]

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        """Build the in-memory corpus / queries datasets (no download, no cache files)."""
        if self.data_loaded:
            return
        split_data = {
            "corpus": Dataset.from_dict(self._corpus),
            "queries": Dataset.from_dict(self._queries),
            "relevant_docs": {query_id: dict(judged) for query_id, judged in self._qrels.items()},
            "top_ranked": None,
        }
        self.dataset = {"default": {self.metadata.eval_splits[0]: split_data}}
        self.data_loaded = True

    def unload_data(self) -> None:
        """Drop the datasets; the records stay, so ``load_data`` can rebuild them (the metadata is kept)."""
        self.dataset = None
        self.data_loaded = False
