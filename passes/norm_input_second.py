"""``norm-input-second``: an Add that reads a normalization's input first reads it second.

Matches an ``Add`` (default domain, two inputs) whose first input is also the data input of a
``LayerNormalization`` or ``RMSNormalization`` and whose second input is not. Produces the same
Add with its two inputs swapped: addition is commutative and broadcasts the same both ways, so
the result is the same bit for bit, in float and in a QDQ model alike.

Why: this is the residual Add of a pre-LN transformer block, ``x + attention(LayerNorm(x))`` as
Whisper's exporter writes it (GPT-2's and ViT's write ``attention(...) + x``). On the HTP emulator
of onnxruntime-qnn 2.7.0 (QNN 2.51, v73), an 8-bit LayerNorm with a uint8 bias
(``quantization.norm_bias_type``) whose input is read first by such an Add is 0.59 output steps
rms from the CPU QDQ model; with the Add's inputs the other way round, or without that Add, 0.26.
On the Whisper-encoder fixture in a8w8 that is 35.8 against 37.1 dB (32 held-out samples); with
this pass 37.1, the CPU estimate. The same holds for RMSNorm, whose scale stays float and which
has no bias: a real-size Llama-class decoder (hidden 2048, ``residual + hidden_states``) measures
12.2 dB on the emulator in a8w8 against a CPU estimate of 14.4, and 14.35 with its residual Adds
turned. The qnn-htp target runs it before quantization (its ``prepare`` list).
"""

from __future__ import annotations

from mapc.ir import Model, is_default_domain
from mapc.passes.base import Pass, PassContext, PassResult
from mapc.passes.registry import register_pass

NORMALIZATIONS = ("LayerNormalization", "RMSNormalization")


@register_pass
class NormInputSecond(Pass):
    """Swap the inputs of an Add whose first input is a normalization's input (see the module doc).

    Counters: ``adds_swapped``.
    """

    name = "norm-input-second"

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        normalized = {id(node.inputs[0]) for node in model.graph.nodes if node.op in NORMALIZATIONS and is_default_domain(node) and node.inputs}
        swapped = 0
        for node in model.graph.nodes:
            if node.op != "Add" or not is_default_domain(node) or len(node.inputs) != 2:
                continue
            first, second = node.inputs
            if id(first) in normalized and id(second) not in normalized:
                node.inputs = [second, first]
                swapped += 1
        return PassResult(changed=bool(swapped), counters={"adds_swapped": swapped})
