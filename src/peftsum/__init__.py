"""peftsum: full fine-tuning vs PEFT for multilingual summarization on XL-Sum."""

__version__ = "0.1.0"
