"""``peftsum serve``: one base model, many PEFT adapters, one HTTP server.

Modules: :mod:`~peftsum.serving.registry` (adapters, base check, LRU by MB),
:mod:`~peftsum.serving.batching` (mixed-adapter micro-batcher), :mod:`~peftsum.serving.metrics`
(Prometheus), :mod:`~peftsum.serving.app` (the FastAPI app and ``serve``),
:mod:`~peftsum.serving.routes` (its routes), :mod:`~peftsum.serving.api_errors` (one-line errors),
:mod:`~peftsum.serving.cost` (adapter vs merged serving cost from run folders).
"""
