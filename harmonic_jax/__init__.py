"""harmonic_jax: instance segmentation with harmonic embeddings (Kulikov & Lempitsky, CVPR 2020).

Modules follow the method: :mod:`~harmonic_jax.guides` (eq. 3) ->
:mod:`~harmonic_jax.embedding` (eq. 1-2) and :mod:`~harmonic_jax.search` (eq. 4) ->
:mod:`~harmonic_jax.cluster` (mean-shift on the host) -> :mod:`~harmonic_jax.metrics`.
"""

from harmonic_jax import cluster, embedding, guides, metrics, search

__version__ = "0.1.0"
__all__ = ["cluster", "embedding", "guides", "metrics", "search"]
