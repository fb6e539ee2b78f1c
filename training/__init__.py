"""Tokenizer, model families, data loading and the DeepSpeed training loop."""
