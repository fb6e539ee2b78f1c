"""The two kinds of step a data pipeline is made of.

``DocumentStep``: looks at one document at a time, inside Spark's Python workers (Arrow
batches via ``mapInPandas``). Filters, extraction, language id and redaction are these.

``DatasetStep``: needs to see documents together (exact, URL and near-duplicate removal), and is
written as Spark DataFrame operations over the *ledger* (``tokenmill.spark_jobs.ledger``): one small row
per document, so that the shuffles a dataset step needs move keys, never text.

A document is a plain ``dict`` with at least ``id``, ``url``, ``source``, ``text`` and
``stats`` (a ``dict[str, int]`` of counters the run sums up, e.g. ``{"pii_email": 2}``).
The base classes own the bookkeeping: the runner records which step dropped a document,
with which reason, and sums every step's counters; a step only decides.
"""

from __future__ import annotations

from typing import Any


class DocumentStep:
    """One per-document step. ``name`` identifies it in configs, counts and drop reasons."""

    name = "step"

    def setup(self) -> None:
        """Load heavy resources (models, n-gram sets) once per Python worker, not once per document."""

    def process(self, doc: dict[str, Any]) -> str | None:
        """May rewrite ``doc["text"]``, add fields or bump ``doc["stats"]``; returns ``None`` if the
        document is kept, else the drop reason."""
        raise NotImplementedError


class DocumentFilter(DocumentStep):
    """A step that only keeps or drops."""

    def process(self, doc: dict[str, Any]) -> str | None:
        return self.reject_reason(doc["text"])

    def reject_reason(self, text: str) -> str | None:
        """Returns ``None`` if the document is kept, else the drop reason."""
        raise NotImplementedError


class DatasetStep:
    """A step over all documents together that moves keys, not text.

    ``key_columns`` names the columns the step needs computed from each document row (hashes of the text, a
    normalised URL); the ledger holds them next to every document's id and status. ``apply`` receives that
    ledger and the documents themselves (persisted, to be read by narrow operations only: ``mapInArrow``,
    ``select``, ``filter``; never a join, window or groupBy over text) and returns the ledger with the same
    rows: rows it drops get ``status = 'dropped'``, ``stage = self.name`` and a ``reason``; rows whose status is
    not ``'kept'`` pass through untouched; no row is lost.
    """

    name = "dataset_step"

    def key_columns(self) -> dict:
        """``{ledger column name: Column expression over a document row}``; the names start with ``_``."""
        return {}

    def apply(self, ledger, docs):
        raise NotImplementedError
