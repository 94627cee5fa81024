"""Experiments: methods x languages x seeds (and cross-lingual pairs), run, evaluated and reported."""
