"""``peftsum serve``: one base model, many PEFT adapters, one HTTP server.

Modules: :mod:`~peftsum.serving.registry` (adapters, base check, LRU by MB),
:mod:`~peftsum.serving.batching` (mixed-adapter micro-batcher), :mod:`~peftsum.serving.metrics`
(Prometheus), :mod:`~peftsum.serving.app` (FastAPI routes and ``serve``),
:mod:`~peftsum.serving.cost` (adapter vs merged serving cost from run folders).
"""
