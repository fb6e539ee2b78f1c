"""An encoder-decoder Hugging Face folder as an MLflow pyfunc model (an MLflow "model from code").

MLflow copies this file into the saved model and runs it at load time, so it imports ``mlflow`` and
``transformers`` only. ``predict`` takes texts and returns the decoded outputs; ``params`` may set
``max_new_tokens`` and ``do_sample``.
"""

from __future__ import annotations

import mlflow
from mlflow.pyfunc import PythonModel


class Seq2SeqGenerator(PythonModel):
    """Text in, generated text out, with ``AutoModelForSeq2SeqLM.generate``."""

    def load_context(self, context):
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        folder = context.artifacts["hf"]
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = AutoModelForSeq2SeqLM.from_pretrained(folder, local_files_only=True).eval()
        self.defaults = dict(context.model_config or {})

    def predict(self, context, model_input, params=None):
        import torch

        texts = _texts(model_input)
        options = {**self.defaults, **(params or {})}
        new_tokens = int(options.get("max_new_tokens", 32))
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit and new_tokens >= limit:  # learned/sinusoidal decoder positions end there
            raise ValueError(f"max_new_tokens={new_tokens} does not fit the decoder's {limit} positions")
        batch = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True)
        with torch.no_grad():
            out = self.model.generate(**batch, max_new_tokens=new_tokens, do_sample=bool(options.get("do_sample")))
        return self.tokenizer.batch_decode(out, skip_special_tokens=True)


def _texts(model_input) -> list[str]:
    if hasattr(model_input, "iloc"):  # a DataFrame: its first column
        return [str(t) for t in model_input.iloc[:, 0]]
    if isinstance(model_input, str):
        return [model_input]
    return [str(t) for t in model_input]


mlflow.models.set_model(Seq2SeqGenerator())
