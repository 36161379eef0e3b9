"""The quantize pass's mixed-precision bookkeeping: 16-bit graph outputs, and the data input of a
weighted op as wide as its output.

* :func:`widen_output_groups` (option ``wide_outputs``): a tie group holding a graph output is
  quantized with its 16-bit alternative from the start (not one tied to a graph input: a KV
  cache keeps its width). The output's final rounding is then
  1/257 of the 8-bit one; under 8-bit activations it is often the largest single error (the
  example CNN's probabilities: 12% of the output error; a random-weight Inception-v1 whose
  logits barely move: all of it), and the tensor is dequantized on the host anyway.
* :func:`unify_settings`: a Conv, Gemm, MatMul or normalization whose output is 16-bit reads its
  data input at 16 bits too (that input's tie group switched to its alternative), so the int32
  bias is computed at the scale the op will use (``s_in · s_w``, weights re-scaled where it would
  overflow, as in an a16w8 model) and the op forms one QDQ node unit (onnxruntime's selectors
  require the data input and output types to agree; see :mod:`mapc.passes.uniform_unit_types`,
  which converts the remaining mixed units exactly after quantization).
"""

from __future__ import annotations

import numpy as np

from mapc.ir import Model
from mapc.passes.quantize.state import RunState
from mapc.passes.uniform_unit_types import WEIGHT_SLOTS


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


def weighted_pairs(model: Model, state: RunState) -> list[tuple[str, str]]:
    """(data input, quantized output) of every weighted op, the output after a folded Relu/Clip."""
    folded = {fold.source: fold.output for fold in state.placement.folds.values() if fold.source}
    pairs = []
    for node in model.graph.nodes:
        if node.op in WEIGHT_SLOTS and node.inputs and len(node.outputs) >= 1:
            output = node.outputs[0].name
            pairs.append((node.inputs[0].name, folded.get(output, output)))
    return pairs


def unify_settings(state: RunState, pairs: list[tuple[str, str]], settings: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``settings`` with the input group of each weighted op whose output is wider switched to
    its alternative (until nothing changes: one widened input may be another op's output)."""
    activation_state, weight_state = settings[0].copy(), settings[1]
    groups = state.quantized_groups()
    index_of = {member: index for index, group in enumerate(groups) for member in group.members}

    def bits(index: int) -> int | None:
        group, setting = groups[index], activation_state[index]
        params = group.params if setting == 1 else group.alternative if setting == 2 else None
        return params.qtype.bits if params is not None else None

    changed = True
    while changed:
        changed = False
        for source, output in pairs:
            if source not in index_of or output not in index_of:
                continue
            entry, exit_ = index_of[source], index_of[output]
            entry_bits, exit_bits = bits(entry), bits(exit_)
            if entry_bits is None or exit_bits is None or exit_bits <= entry_bits or groups[entry].alternative is None:
                continue
            if groups[entry].alternative.qtype.bits == exit_bits:
                activation_state[entry] = 2
                changed = True
    return activation_state, weight_state
