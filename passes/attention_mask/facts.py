"""What attention-mask tells later passes and the caller: the mask inputs it hoisted (mask-as-input)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import onnx

from mapc.passes.facts import Fact


@dataclass(frozen=True)
class MaskInputs:
    """The float mask inputs that replaced mask subgraphs, and how the host builds each."""

    #: One contract per new input, as in the pass's report details (``hoisted_inputs``).
    contracts: list[dict[str, Any]] = field(default_factory=list)
    #: The removed subgraph of each new input as a model from the original inputs (None where it
    #: could not be cut out), by input name; ``mapc compile`` writes them beside its output.
    host_models: dict[str, onnx.ModelProto | None] = field(default_factory=dict)


MASK_INPUTS: Fact[MaskInputs] = Fact("mask-inputs", "the mask inputs attention-mask hoisted", provided_by="attention-mask")
