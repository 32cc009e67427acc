"""BYORn Studio: audit untrusted VLM fine-tuning data and defend against backdoors."""
__version__ = "0.1.0"
