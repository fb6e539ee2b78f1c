"""Helpers for the tests of one data step (``DocumentStep``): its contract, and a step ready to process."""

from __future__ import annotations

from tokenmill.spark_jobs.steps import DocumentStep


def doc(text: str | None, stats: dict | None = None) -> dict:
    """One document as the steps receive it (the columns of ``DOC_SCHEMA``)."""
    return {
        "id": "d1",
        "url": "http://example.com/",
        "source": "x",
        "text": text,
        "payload": None,
        "content_type": "",
        "stats": {} if stats is None else stats,
    }


def ready(step: DocumentStep) -> DocumentStep:
    """``step`` after its ``setup()`` hook, as a Spark partition runs it before the first document."""
    step.setup()
    return step


def assert_document_step(step, name: str, **defaults) -> None:
    """``step`` is a ``DocumentStep`` called ``name`` (the config's step name) whose options have these defaults."""
    assert isinstance(step, DocumentStep)
    assert step.name == name
    assert {option: getattr(step, option) for option in defaults} == defaults
