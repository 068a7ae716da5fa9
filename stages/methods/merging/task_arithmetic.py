"""Task arithmetic (Ilharco et al. 2023): θ_base + λ Σ w_i (θ_i − θ_base).

normalize defaults to false; negative weights subtract a task vector (negation).
"""
from functools import partial

from stages.methods.merging.merge_methods import register
from stages.methods.merging.method_base import MethodSpec
from stages.methods.merging.task_vectors import merge_task_vectors, task_vector_params

_shared, _per_model = task_vector_params(normalize=False, rescale=False)
_per_model.pop("density")  # no sparsification in plain task arithmetic
_shared.pop("rescale")

SPEC = register(MethodSpec(
    name="task_arithmetic",
    merge=partial(merge_task_vectors, sparsify=None, consensus=False),
    needs_base=True,
    shared=_shared,
    per_model=_per_model,
))
