"""Iterative refinement: one loop (loop.py) and the algorithms that plug into it. No Prefect in here.

    loop.py              refine_loop, ItemState, RefineStep, stop criteria
    self_refine.py       generate -> feedback -> refine (prompted LMs, metric critics, re-decoding)
    deliberation.py      a second pass reading source + draft
    cmlm.py              a conditional masked LM (encoder + non-causal decoder + length head)
    mask_predict.py      Mask-Predict decoding for a CMLM
    masked_diffusion.py  masked-diffusion repair with any HF masked LM
    report.py            quality per iteration, stop fractions, compute saved
"""
from stages.methods.refinement.refine_loop import ItemState, RefineOutput, RefineStep, StopReason, flagged_done, refine_loop, score_at_least

__all__ = ["ItemState", "RefineOutput", "RefineStep", "StopReason", "flagged_done", "refine_loop", "score_at_least"]
