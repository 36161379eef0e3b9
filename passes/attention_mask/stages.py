"""The stages of ``attention-mask`` and the order of their rules: the one place that order is written.

Both stages visit the attentions in graph order (rules that need another order say so);
within a stage, rules run in list order, each over every attention. Between the stages the
pass removes the score-spine nodes ``canonical`` replaced, so that they do not count as
readers of a fill off the mask paths.
"""

from __future__ import annotations

from mapc.passes.attention_mask.rules import additive_mask, finite_fill, finite_mask, mask_as_input, nan_guard

#: One additive mask per attention (bool to additive, trivial masks removed, constant parts split).
CANONICAL = [additive_mask]
#: On the canonical masks: finite fills, then the mask as an input, then the NaN guard.
FINITE = [finite_mask, finite_fill, mask_as_input, nan_guard]
STAGES = {"canonical": CANONICAL, "finite": FINITE}
