"""The two kinds of step a data pipeline is made of.

``DocumentStep``: looks at one document at a time, inside Spark's Python workers (Arrow
batches via ``mapInPandas``). Filters, extraction, language id and redaction are these.

``DatasetStep``: needs to see documents together (dedup, decontamination against a set),
and is written as Spark DataFrame operations.

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
    """A step over the whole document DataFrame.

    ``apply`` receives every document (columns of ``DOC_SCHEMA`` in ``tokenmill.spark_jobs.clean``) and
    returns them all: rows it drops get ``status = 'dropped'``, ``stage = self.name`` and a
    ``reason``; rows whose status is not ``'kept'`` pass through untouched; no row is lost.
    """

    name = "dataset_step"

    def apply(self, docs):
        raise NotImplementedError
