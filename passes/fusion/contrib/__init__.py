"""onnxruntime's contrib ops -> the standard ops mapc's fusions produce.

onnxruntime's transformers optimizer, its exporters and onnxruntime-genai write ops of the
``com.microsoft`` domain that only onnxruntime's CPU/GPU kernels run; an NPU compiler refuses
them. Each rule rewrites one op into exactly what its CPU kernel computes, in standard ops (or
``mapc`` functions below their opsets), checking the preconditions that make this exact and
leaving the node with a near-miss otherwise. One module per family:

* :mod:`.norms`: ``SkipLayerNormalization``, ``SkipSimplifiedLayerNormalization``,
  ``SimplifiedLayerNormalization``, ``BiasGelu``, ``Gelu``, ``FastGelu``;
* :mod:`.embed`: ``EmbedLayerNormalization``;
* :mod:`.attention`: the packed-QKV ``Attention`` (past/present, unidirectional);
* :mod:`.mha`: ``MultiHeadAttention`` (self/cross, bias, masks, past/present);
* :mod:`.gqa`: ``GroupQueryAttention`` (prompt and static-past cases, packed QKV, rotary);
* :mod:`.rotary`: ``RotaryEmbedding`` -> the standard ``RotaryEmbedding`` (opset 23);

The attention rewrites emit the decomposed attention of :mod:`.sdpa`, which the ``attention``
rule then fuses into a standard ``Attention``.
"""

from __future__ import annotations

from mapc.passes.fusion.contrib.attention import ContribAttentionToStandard
from mapc.passes.fusion.contrib.embed import EmbedLayerNormToStandard
from mapc.passes.fusion.contrib.gqa import ContribGroupQueryAttentionToStandard
from mapc.passes.fusion.contrib.mha import ContribMultiHeadAttentionToStandard
from mapc.passes.fusion.contrib.norms import RULES as NORMS
from mapc.passes.fusion.contrib.rotary import ContribRotaryToStandard

RULES = [*NORMS, EmbedLayerNormToStandard(), ContribAttentionToStandard(), ContribMultiHeadAttentionToStandard(),
         ContribGroupQueryAttentionToStandard(), ContribRotaryToStandard()]

__all__ = ["RULES"]
