"""A Hugging Face export as an MLflow model: :func:`save_mlflow_model` writes a folder with an ``MLmodel`` file,
so a registered version (``models:/<name>/<version>``) loads with ``mlflow.pyfunc.load_model`` for every family
and, where ``transformers`` has a pipeline for the task, with ``mlflow.transformers.load_model``.

- A decoder (GPT) is a ``text-generation`` pipeline (``mlflow.transformers`` flavour). Its inference config
  keeps the end of a long prompt and refuses, with a ``ValueError``, more new tokens than the context holds
  (``handle_long_generation="hole"``): pyfunc never runs past the learned positions.
- An encoder (BERT) is a ``fill-mask`` pipeline that reads a spelled ``[MASK]`` in its input.
- An encoder-decoder (T5, Transformer) is a pyfunc model from code, ``seq2seq_pyfunc.py``, copied into the
  model: ``transformers`` 5 has no text-to-text pipeline. It needs ``transformers`` only, not tokenmill.

Saving needs no network: the model card is the export's own ``README.md``, and the pip requirements are the
installed versions rather than MLflow's inference (which loads the model again in a subprocess).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tokenmill.training.families import ModelSpec

#: The number of new tokens a prediction makes unless ``params={"max_new_tokens": n}`` says otherwise.
DEFAULT_NEW_TOKENS = 32
SEQ2SEQ_CODE = Path(__file__).with_name("seq2seq_pyfunc.py")


def requirements() -> list[str]:
    """Pins of what loading the model needs, at the versions that saved it."""
    from importlib.metadata import version

    return [f"{name}=={version(name).split('+')[0]}" for name in ("torch", "transformers", "tokenizers", "safetensors")]


def save_mlflow_model(folder: str | Path, spec: ModelSpec, path: str | Path) -> Path:
    """Write the Hugging Face folder ``folder`` (from ``export``) as an MLflow model at ``path``; returns ``path``."""
    from huggingface_hub import ModelCard

    from tokenmill.training.hf import pipeline_tag

    folder, path = Path(folder), Path(path)
    card = ModelCard.load(folder / "README.md")
    if spec.encoder_decoder:
        _save_seq2seq(folder, path)
    else:
        _save_pipeline(folder, pipeline_tag(spec), card, path)
    # MLflow looks for a transformers model's licence on the Hub, under the folder's name; the card says what it is.
    (path / "LICENSE.txt").write_text(licence_text(card.data.to_dict()))
    return path


def _signature(new_tokens: bool):
    from mlflow.models import infer_signature

    params: dict[str, Any] = {"max_new_tokens": DEFAULT_NEW_TOKENS, "do_sample": False} if new_tokens else {}
    return infer_signature(["a prompt"], ["an answer"], params=params or None)


def _save_pipeline(folder: Path, task: str, card, path: Path) -> None:
    import mlflow.transformers
    import transformers

    pipe = transformers.pipeline(task, model=str(folder), tokenizer=str(folder), device="cpu")
    if task == "text-generation":
        config = {"handle_long_generation": "hole", "truncation": True, "max_new_tokens": DEFAULT_NEW_TOKENS}
    else:  # fill-mask: the input spells [MASK]; the export reads spelled specials as text, as training did
        config = {"tokenizer_kwargs": {"split_special_tokens": False, "truncation": True}}
    mlflow.transformers.save_model(
        transformers_model=pipe,
        path=str(path),
        task=task,
        model_card=card,
        signature=_signature(new_tokens=task == "text-generation"),
        pip_requirements=requirements(),
        model_config=config,
    )


def licence_text(front: dict[str, Any]) -> str:
    """The licence line of a model card's front matter (``license``, ``license_name``, ``license_link``)."""
    parts = [f"License: {front.get('license', 'unknown')}"]
    parts += [
        f"{key.removeprefix('license_')}: {front[key]}" for key in ("license_name", "license_link") if key in front
    ]
    return "\n".join(parts) + "\nSee the model card (model_card.md) for the training data and its sources.\n"


def _save_seq2seq(folder: Path, path: Path) -> None:
    import mlflow.pyfunc

    mlflow.pyfunc.save_model(
        path=str(path),
        python_model=str(SEQ2SEQ_CODE),
        artifacts={"hf": str(folder)},
        signature=_signature(new_tokens=True),
        pip_requirements=requirements(),
        model_config={"max_new_tokens": DEFAULT_NEW_TOKENS},
    )
