"""``decompose-attention``: ONNX ``Attention`` as MatMul, scale, explicit finite mask, Softmax.

For targets without a native Attention op (QNN EP sent every opset-23 Attention to CPU until
onnxruntime-qnn PR #651). Follows the opset-23/24 spec, checked against onnxruntime 1.31 and
onnx's reference implementation:

* 3-D inputs ``[B, S, heads*D]`` are split into heads with ``q_num_heads``/``kv_num_heads``;
* ``past_key``/``past_value`` are concatenated on the sequence axis (``present_*`` outputs);
* GQA (``kv_num_heads < q_num_heads``, each KV head serving ``q/kv`` consecutive query heads)
  reshapes Q to ``[B, kv_heads, reps*S, D]`` instead of repeating K and V;
* ``scale`` defaults to ``1/sqrt(head_size)``; ``softcap`` is ``softcap * tanh(x / softcap)``;
  ``softmax_precision`` casts around the Softmax;
* the mask is explicit, finite and additive: a bool ``attn_mask`` becomes
  ``Mul(Sub(1, Cast(m)), NEG)``, a float one is clamped with ``Max(m, NEG)``, a mask shorter than
  the keys is padded with NEG (the spec pads with -inf/False), and ``is_causal`` is materialised
  as ``j <= i + past_length`` (the spec's offset: the number of ``past_key`` positions, 0 without
  one), never left to a runtime's reading of the attribute: runtimes disagree when
  ``q_len < kv_len`` (CUDA aligns upper-left, older ORT CPU bottom-right, ORT issue #29020).

A fully masked query row gives zero in the spec and the mean of V here (its softmax is taken
over NEG-shifted scores); such rows are padding and their outputs are not used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from mapc.ir import Model, NearMiss, is_default_domain, remove_dead_nodes, toposort
from mapc.passes.attention_mask.detection import AttentionSite
from mapc.passes.attention_mask.exactness import check_exact, margin, measured_ranges, proven_range
from mapc.passes.attention_mask.fills import FillOptions, resolve_mask_value
from mapc.passes.base import Note, Pass, PassContext, PassResult
from mapc.passes.check_static import inputs_static, shapes_fix
from mapc.passes.registry import register_pass
from mapc.passes.shape_ops import SHAPES
from mapc.passes.verify import SAMPLES

Dim = int | str | None


@register_pass
class DecomposeAttention(Pass):
    """Decompose ONNX Attention (opset 23+) into MatMul, scale, finite additive mask, Softmax, MatMul.

    Matches every ONNX-domain Attention node. Produces Q @ K^T (GQA by grouping query heads, no
    repeated K/V), the scale (attribute, or 1/sqrt(head_size)), softcap, one additive mask
    holding 0 or NEG (a bool attn_mask made arithmetic, a float one clamped to >= NEG, is_causal
    materialised as j <= i + past_length, summed masks clamped with Max(., NEG)), Softmax (in
    softmax_precision if set), and the product with V; present_key/present_value and
    qk_matmul_output (modes 0-3) keep their meaning. 3-D and 4-D inputs, past_key/past_value.
    Leaves alone (with a note) nodes whose head counts are unknown, attentions inside If/Loop
    bodies, and (fp32/fp16 masks) attentions whose logits' range, proven or measured on the
    user's samples, does not let NEG mask as exactly as the spec's -inf (see attention-mask). NEG is mask_value or the precision's default (fp16/fp32 -1e4, int16 -50,
    int8 -20).
    """

    name = "decompose-attention"
    requires = (SHAPES,)

    @dataclass
    class Options(FillOptions):
        #: Where the scale is applied: on the scores (Q @ K^T, then Mul) or on Q before the MatMul
        #: (cheaper when the key length exceeds the head size, and keeps fp16 products in range).
        scale_on: Literal["scores", "query"] = "scores"
        #: Largest causal mask (MiB) stored as a constant when the lengths are static.
        max_constant_mb: float = 16.0

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        neg = resolve_mask_value(self.options.precision, self.options.mask_value, self.name)
        graph = model.graph
        nodes = [n for n in graph.nodes if n.op == "Attention" and is_default_domain(n)]
        notes: list[Note] = []
        details = []
        decomposed = 0
        for index, node in enumerate(nodes):
            ctx.report_progress("decomposing attention", index, len(nodes))
            builder = _Builder(model, node, neg, self.options.scale_on, int(self.options.max_constant_mb * (1 << 20)))
            problem = builder.problem()
            if problem is not None:
                notes.append(Note("decompose-attention.skipped", problem, node=node.name, fix=shapes_fix(graph, "fix the input shapes (fix-shapes) first")))
                continue
            refusal = _inexact(model, node, neg, self.options.precision, ctx.facts.get(SAMPLES))
            if refusal is not None:
                notes.append(Note(f"{self.name}.{refusal.code}", refusal.condition, node=node.name, fix=refusal.fix))
                continue
            record = builder.build()
            notes.extend(builder.notes)
            details.append(record)
            decomposed += 1
        if decomposed:
            remove_dead_nodes(graph)
            toposort(graph)
        return PassResult(changed=bool(decomposed), counters={"attention_decomposed": decomposed}, notes=notes,
                          details={"mask_value": neg, "attentions": details})


def _inexact(model: Model, node: gs.Node, neg: float, precision: str, samples: list[dict[str, np.ndarray]] | None) -> NearMiss | None:
    """Why NEG at the masked positions would change this attention's output (its spec masks
    with -inf), or None: no mask, an int mask (not checked), or logits that keep it exact."""
    masked = (len(node.inputs) > 3 and not node.inputs[3].is_empty()) or bool(node.attrs.get("is_causal", 0))
    limit = margin(precision)
    if not masked or limit is None:
        return None
    site = AttentionSite(node, "attention-op")
    known = proven_range(site, neg, {}) or (measured_ranges(model, [site], neg, samples).get(id(site)) if samples else None)
    try:
        check_exact(site, known, neg, -np.inf, margin=limit, precision=precision, shapes_static=inputs_static(model.graph))
    except NearMiss as miss:
        return miss
    return None


class _Builder:
    """Builds the decomposition of one Attention node in place of it."""

    def __init__(self, model: Model, node: gs.Node, neg: float, scale_on: str, max_constant_bytes: int) -> None:
        self.model = model
        self.graph = model.graph
        self.node = node
        self.neg = neg
        self.scale_on = scale_on
        self.max_constant_bytes = max_constant_bytes
        self.notes: list[Note] = []
        self._mask_kind = "none"
        inputs = list(node.inputs) + [gs.Variable.empty()] * (6 - len(node.inputs))
        self.query, self.key, self.value, self.mask, self.past_key, self.past_value = inputs[:6]
        self.nonpad = inputs[6] if len(inputs) > 6 else gs.Variable.empty()
        self.dtype = np.dtype(self.query.dtype or np.float32)
        self.rank = len(self.query.shape) if self.query.shape is not None else None
        attrs = node.attrs
        self.q_heads = attrs.get("q_num_heads")
        self.kv_heads = attrs.get("kv_num_heads")
        if self.rank == 4:
            self.q_heads = self.q_heads or _int(self.query.shape[1])
            self.kv_heads = self.kv_heads or (_int(self.key.shape[1]) if self.key.shape else None)

    def problem(self) -> str | None:
        if self.rank not in (3, 4):
            return "the rank of Q is unknown"
        if not self.nonpad.is_empty():
            return "nonpad_kv_seqlen (opset 24 external cache) is not decomposed"
        if self.q_heads is None or self.kv_heads is None:
            return "the number of query or key/value heads is unknown"
        if self.q_heads % self.kv_heads:
            return f"q_num_heads {self.q_heads} is not a multiple of kv_num_heads {self.kv_heads}"
        return None

    # -- the decomposition ------------------------------------------------------------------------

    def build(self) -> dict[str, object]:
        node, attrs = self.node, self.node.attrs
        outputs = list(node.outputs) + [gs.Variable.empty()] * (4 - len(node.outputs))
        y, present_key, present_value, qk_output = outputs[:4]
        node.outputs.clear()
        node.inputs.clear()
        self.graph.nodes.remove(node)

        query, key, value = self.query, self.key, self.value
        if self.rank == 3:
            query = self._heads(query, self.q_heads)
            key = self._heads(key, self.kv_heads)
            value = self._heads(value, self.kv_heads)
        if not self.past_key.is_empty():
            key = self._op("Concat", [self.past_key, key], axis=2, out=_used(present_key))
            value = self._op("Concat", [self.past_value, value], axis=2, out=_used(present_value))
        scale = attrs.get("scale")
        scale_tensor = self._constant(scale) if scale is not None else self._default_scale(query)
        if self.scale_on == "query":
            query = self._op("Mul", [query, scale_tensor])
        key_t = self._op("Transpose", [key], perm=[0, 1, 3, 2])
        reps = self.q_heads // self.kv_heads
        if reps > 1:
            grouped = self._op("Reshape", [query, self._ints([0, self.kv_heads, -1, 0])])
            scores = self._op("Reshape", [self._op("MatMul", [grouped, key_t]), self._ints([0, self.q_heads, -1, 0])])
        else:
            scores = self._op("MatMul", [query, key_t])
        if self.scale_on == "scores":
            scores = self._op("Mul", [scores, scale_tensor])
        mode = int(attrs.get("qk_matmul_output_mode", 0))
        stages = {0: scores}
        softcap = float(attrs.get("softcap", 0.0) or 0.0)
        if softcap > 0:
            cap = self._constant(softcap)
            scores = self._op("Mul", [self._op("Tanh", [self._op("Div", [scores, cap])]), cap])
        stages[1] = scores
        mask = self._mask(query, key)
        if mask is not None:
            scores = self._op("Add", [scores, mask])
        stages[2] = scores
        precision = attrs.get("softmax_precision")
        if precision is not None and onnx.helper.tensor_dtype_to_np_dtype(precision) != self.dtype:
            probabilities = self._op("Softmax", [self._op("Cast", [scores], to=int(precision))], axis=-1)
            probabilities = self._op("Cast", [probabilities], to=onnx.helper.np_dtype_to_tensor_dtype(self.dtype))
        else:
            probabilities = self._op("Softmax", [scores], axis=-1)
        stages[3] = probabilities
        if _used(qk_output) is not None:
            self._op("Identity", [stages.get(mode, stages[0])], out=qk_output)
            if mode == 2 and mask is not None:
                self.notes.append(Note("decompose-attention.qk-output", "qk_matmul_output (mode 2) now holds the finite mask value where it held -inf", node=self.node.name))
        if reps > 1:
            grouped = self._op("Reshape", [probabilities, self._ints([0, self.kv_heads, -1, 0])])
            context = self._op("Reshape", [self._op("MatMul", [grouped, value]), self._ints([0, self.q_heads, -1, 0])])
        else:
            context = self._op("MatMul", [probabilities, value])
        if self.rank == 3:
            context = self._op("Reshape", [self._op("Transpose", [context], perm=[0, 2, 1, 3]), self._ints([0, 0, -1])], out=y)
        else:
            self._op("Identity", [context], out=y)
        return {
            "node": self.node.name, "rank": self.rank, "q_num_heads": self.q_heads, "kv_num_heads": self.kv_heads,
            "scale": float(scale) if scale is not None else "1/sqrt(head_size)", "softcap": softcap,
            "is_causal": int(attrs.get("is_causal", 0)), "mask": self._mask_kind, "past": not self.past_key.is_empty(),
        }

    def _heads(self, tensor: gs.Tensor, heads: int) -> gs.Tensor:
        split = self._op("Reshape", [tensor, self._ints([0, 0, heads, -1])])
        return self._op("Transpose", [split], perm=[0, 2, 1, 3])

    def _default_scale(self, query: gs.Tensor) -> gs.Tensor:
        head_size = None
        if self.query.shape is not None:
            last = self.query.shape[-1]
            if isinstance(last, int):
                head_size = last // self.q_heads if self.rank == 3 else last
        if head_size:
            return self._constant(1.0 / math.sqrt(head_size))
        size = self._op("Gather", [self._op("Shape", [query], dtype=np.int64), self._ints(3, scalar=True)], axis=0, dtype=np.int64)
        as_float = self._op("Cast", [size], to=onnx.helper.np_dtype_to_tensor_dtype(self.dtype))
        return self._op("Reciprocal", [self._op("Sqrt", [as_float])])

    # -- the mask ---------------------------------------------------------------------------------

    def _mask(self, query: gs.Tensor, key: gs.Tensor) -> gs.Tensor | None:
        parts = []
        kinds = []
        if not self.mask.is_empty():
            mask = self.mask
            if self.mask.dtype is not None and np.dtype(self.mask.dtype) == np.bool_:
                as_float = self._op("Cast", [mask], to=onnx.helper.np_dtype_to_tensor_dtype(self.dtype))
                mask = self._op("Mul", [self._op("Sub", [self._constant(1.0), as_float]), self._constant(self.neg)])
                kinds.append("bool attn_mask")
            else:
                mask = self._op("Max", [mask, self._constant(self.neg)])
                kinds.append("float attn_mask (clamped)")
            parts.append(self._pad_keys(mask, key))
        if int(self.node.attrs.get("is_causal", 0)):
            parts.append(self._causal(query, key))
            kinds.append("is_causal (j <= i + past_length)")
        self._mask_kind = " + ".join(kinds) or "none"
        if not parts:
            return None
        if len(parts) == 1:
            return parts[0]
        return self._op("Max", [self._op("Add", parts), self._constant(self.neg)])

    def _pad_keys(self, mask: gs.Tensor, key: gs.Tensor) -> gs.Tensor:
        """Pad the mask's key axis with NEG up to the key length, as the spec pads with -inf."""
        mask_shape = self.mask.shape
        total = self._key_length_dim()
        if mask_shape and total is not None and mask_shape[-1] == total:
            return mask
        rank = len(mask_shape) if mask_shape is not None else None
        if rank is None:
            self.notes.append(Note("decompose-attention.mask-rank", "attn_mask rank unknown: assumed to cover every key", node=self.node.name))
            return mask
        keys = self._op("Gather", [self._op("Shape", [key], dtype=np.int64), self._ints([2])], axis=0, dtype=np.int64)
        have = self._op("Gather", [self._op("Shape", [mask], dtype=np.int64), self._ints([rank - 1])], axis=0, dtype=np.int64)
        missing = self._op("Sub", [keys, have], dtype=np.int64)
        pads = self._op("Concat", [self._ints([0] * (2 * rank - 1)), missing], axis=0, dtype=np.int64)
        return self._op("Pad", [mask, pads, self._constant(self.neg)], mode="constant")

    def _key_length_dim(self) -> Dim:
        key_shape = self.key.shape
        if key_shape is None:
            return None
        own = key_shape[2] if self.rank == 4 else key_shape[1]
        if self.past_key.is_empty():
            return own
        past = self.past_key.shape[2] if self.past_key.shape is not None else None
        if isinstance(own, int) and isinstance(past, int):
            return own + past
        return None

    def _causal(self, query: gs.Tensor, key: gs.Tensor) -> gs.Tensor:
        """0 where key j <= query i + past_length, NEG elsewhere: shape [S, T]."""
        q_len = self.query.shape[1] if self.rank == 3 else self.query.shape[2]
        k_len = self._key_length_dim()
        past = 0 if self.past_key.is_empty() else (self.past_key.shape[2] if self.past_key.shape is not None else None)
        new_keys = self.key.shape[1] if self.rank == 3 else self.key.shape[2]
        if q_len is None or q_len != new_keys:
            self.notes.append(Note(
                "decompose-attention.causal-alignment",
                f"is_causal with {q_len or '?'} queries and {new_keys or '?'} new keys: materialised the spec's "
                "j <= i + past_length; runtimes disagree here (CUDA aligns upper-left, onnxruntime 1.31 CPU "
                "bottom-right for a single query with a cache)",
                node=self.node.name, severity="warning"))
        if all(isinstance(d, int) for d in (q_len, k_len, past)) and q_len * k_len * self.dtype.itemsize <= self.max_constant_bytes:
            rows = np.arange(q_len)[:, None] + past
            keep = np.arange(k_len)[None, :] <= rows
            return gs.Constant(self.model.fresh_name("attention_causal_mask"), np.where(keep, 0, self.neg).astype(self.dtype))
        q_shape = self._op("Shape", [query], dtype=np.int64)
        k_shape = self._op("Shape", [key], dtype=np.int64)
        q_count = self._op("Gather", [q_shape, self._ints(2, scalar=True)], axis=0, dtype=np.int64)
        k_count = self._op("Gather", [k_shape, self._ints(2, scalar=True)], axis=0, dtype=np.int64)
        zero, one = self._ints(0, scalar=True), self._ints(1, scalar=True)
        rows = self._op("Unsqueeze", [self._op("Range", [zero, q_count, one], dtype=np.int64), self._ints([1])], dtype=np.int64)
        if not self.past_key.is_empty():
            past_count = self._op("Gather", [self._op("Shape", [self.past_key], dtype=np.int64), self._ints(2, scalar=True)], axis=0, dtype=np.int64)
            rows = self._op("Add", [rows, past_count], dtype=np.int64)
        cols = self._op("Unsqueeze", [self._op("Range", [zero, k_count, one], dtype=np.int64), self._ints([0])], dtype=np.int64)
        keep = self._op("LessOrEqual", [cols, rows], dtype=np.bool_)
        as_float = self._op("Cast", [keep], to=onnx.helper.np_dtype_to_tensor_dtype(self.dtype))
        return self._op("Mul", [self._op("Sub", [self._constant(1.0), as_float]), self._constant(self.neg)])

    # -- building blocks --------------------------------------------------------------------------

    def _op(self, op: str, inputs: list[gs.Tensor], *, out: gs.Tensor | None = None, dtype: object = None, **attrs: object) -> gs.Tensor:
        base = (self.node.name or "attention") + f"/{op}"
        if out is None:
            out = gs.Variable(self.model.fresh_name(base + "_output"), dtype=np.dtype(dtype) if dtype is not None else self.dtype)
        self.graph.nodes.append(gs.Node(op, name=self.model.fresh_name(base), attrs=attrs, inputs=inputs, outputs=[out]))
        return out

    def _constant(self, value: float) -> gs.Constant:
        return gs.Constant(self.model.fresh_name((self.node.name or "attention") + "/value"), np.array(value, dtype=self.dtype))

    def _ints(self, values: list[int] | int, scalar: bool = False) -> gs.Constant:
        array = np.array(values, dtype=np.int64)
        return gs.Constant(self.model.fresh_name((self.node.name or "attention") + "/shape"), array if not scalar else array.reshape(()))


def _used(tensor: gs.Tensor) -> gs.Tensor | None:
    return None if tensor.is_empty() else tensor


def _int(dim: Dim) -> int | None:
    return dim if isinstance(dim, int) else None
