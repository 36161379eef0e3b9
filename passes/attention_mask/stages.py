"""The stages of ``attention-mask`` and the order of their rules: the one place that order is written.

Both stages visit the attentions in graph order (rules that need another order say so);
within a stage, rules run in list order, each over every attention. Between the stages the
pass removes the score-spine nodes ``canonical`` replaced, so that they do not count as
readers of a fill off the mask paths.
"""

from __future__ import annotations

from mapc.passes.attention_mask.rules import additive_mask, finite_fill, finite_mask, mask_as_input, nan_guard

#: R2, R4, R5: one additive mask per attention.
CANONICAL = [additive_mask]
#: On the canonical masks: R1 finite fills, then R6 the mask as an input, then R3 the NaN guard.
FINITE = [finite_mask, finite_fill, mask_as_input, nan_guard]
STAGES = {"canonical": CANONICAL, "finite": FINITE}
