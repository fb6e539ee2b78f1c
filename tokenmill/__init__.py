"""tokenmill: raw web text in, a trained and tracked foundation model out."""

__version__ = "0.1.0"
