"""DARE-TIES (Yu et al. 2023): random drop with L1 rescale, then TIES sign election.

Defaults follow mergekit: normalize false, rescale true.
"""
from functools import partial

from stages.methods.merging.merge_methods import register
from stages.methods.merging.method_base import MethodSpec
from stages.methods.merging.task_vectors import merge_task_vectors, task_vector_params

_shared, _per_model = task_vector_params(normalize=False, rescale=True)

SPEC = register(MethodSpec(
    name="dare_ties",
    merge=partial(merge_task_vectors, sparsify="random", consensus=True),
    needs_base=True,
    shared=_shared,
    per_model=_per_model,
    random=True,
))
