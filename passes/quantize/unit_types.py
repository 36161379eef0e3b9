"""The quantize pass's 16-bit graph outputs (option ``wide_outputs``).

* :func:`widen_output_groups` (option ``wide_outputs``): a tie group holding a graph output is
  quantized with its 16-bit alternative from the start (not one tied to a graph input: a KV
  cache keeps its width). The output's final rounding is then
  1/257 of the 8-bit one; under 8-bit activations it is often the largest single error (the
  example CNN's probabilities: 12% of the output error; a random-weight Inception-v1 whose
  logits barely move: all of it), and the tensor is dequantized on the host anyway.

The op writing such an output reads its 8-bit inputs converted exactly to 16 bits
(:mod:`mapc.passes.uniform_unit_types`), and its int32 bias is computed at that scale
(:func:`~.params.read_params`): only that one op computes in 16 bits.
"""

from __future__ import annotations

from mapc.passes.quantize.state import RunState


def widen_output_groups(state: RunState, outputs: set[str], inputs: set[str]) -> list[str]:
    """Give every quantized group holding one of ``outputs`` its 16-bit alternative, unless it also
    holds one of ``inputs`` (state fed back, an LLM's KV cache: widening it would double the
    cache); the widened outputs, in group order."""
    widened = []
    for group in state.quantized_groups():
        members = [m for m in group.members if m in outputs]
        if members and not inputs.intersection(group.members) and group.alternative is not None and group.params is not None and group.alternative.qtype.bits > group.params.qtype.bits:
            group.params, group.alternative = group.alternative, None
            group.notes.append("a graph output: quantized at 16 bits (wide_outputs)")
            widened.extend(members)
    return widened
