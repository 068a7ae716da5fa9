"""TIES merging (Yadav et al. 2023): trim to top-k |δ|, elect a sign, average agreeing entries.

normalize defaults to true (divide by the summed weights of agreeing models per entry).
"""
from functools import partial

from stages.methods.merging.merge_methods import register
from stages.methods.merging.method_base import MethodSpec
from stages.methods.merging.task_vectors import merge_task_vectors, task_vector_params

_shared, _per_model = task_vector_params(normalize=True, rescale=False)

SPEC = register(MethodSpec(
    name="ties",
    merge=partial(merge_task_vectors, sparsify="magnitude", consensus=True),
    needs_base=True,
    shared=_shared,
    per_model=_per_model,
))
