"""Defenses against backdoored fine-tuning data (one module per defense)."""
