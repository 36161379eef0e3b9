"""Give one decoder export the static interface of a prefill or decode step.

:func:`static_step` edits a loaded decoder (whose roles and position cut were found on it) into a
step that takes ``T`` new tokens over a cache of ``C`` positions:

* ``input_ids`` becomes int32 ``[1, T]`` (the embedding Gather reads it as it is);
* the graph's own position arithmetic is cut at :class:`~.positions.PositionCut` and fed from an
  int32 ``position_ids`` ``[1, T]`` input, or, with ``rope_inputs``, the rotary ``Cos``/``Sin``
  are replaced by ``rope_cos``/``rope_sin`` inputs (the host looks rows up in a table mapc
  writes, :class:`~.rope.RopeTable`);
* past K/V inputs are renamed ``past_key.{i}``/``past_value.{i}`` ``[1, kv_heads, C - T,
  head_dim]``, and each present output (``Concat(past, new)``) is replaced by the new keys or
  values alone, ``new_key.{i}``/``new_value.{i}`` ``[1, kv_heads, T, head_dim]``;
* with ``embedding_on_host``, the token embedding Gather (and a learned position embedding's)
  leaves the graph: its output becomes a ``token_embeds`` (``position_embeds``) input
  ``[1, T, hidden]`` and :func:`~.embedding.host_embedding` builds the small graph the host runs
  instead;
* the logits output is renamed ``logits`` (with ``separate_lm_head``, the graph ends at lm_head's
  input, ``hidden_states``: :mod:`~.lm_head`); the 2-D mask input stays (as ``attention_mask_2d``
  ``[1, C]``) until the attention-mask pass turns the mask it feeds into a host input.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from mapc.ir import Model, UsageError, remove_dead_nodes, standard_op
from mapc.llm.embedding import embeds_input
from mapc.llm.graph_edits import onnx_type, rewire
from mapc.llm.lm_head import HIDDEN, cut_lm_head
from mapc.llm.positions import PositionCut
from mapc.llm.rope import RopeTable, replace_rotary
from mapc.llm.roles import DecoderRoles, embedding_gather

#: The name the 2-D padding mask has until the attention-mask pass replaces what it feeds.
MASK_2D = "attention_mask_2d"


@dataclass
class StaticStep:
    """A decoder edited to take ``new_tokens`` tokens over a ``context``-position cache."""

    model: Model
    new_tokens: int
    context: int
    input_shapes: dict[str, list[int]]
    rope: list[RopeTable]
    #: Embedding tables moved to the host, by the input they now feed (``token_embeds``...).
    host_tables: dict[str, tuple[str, np.ndarray]]
    #: Whether the decoder has rotary embeddings at all (GPT-2 learns its positions).
    rotary: bool
    #: lm_head's weight when it became a graph of its own (the step ends at ``hidden_states``).
    lm_head: np.ndarray | None = None


def static_step(model: Model, roles: DecoderRoles, cut: PositionCut, *, new_tokens: int, context: int,
                rope_inputs: bool, embedding_on_host: bool = False, last_logits: bool = False,
                cache_dtype: np.dtype | None = None, separate_lm_head: bool = False) -> StaticStep:
    """Edit ``model`` in place into one static step (see the module docstring)."""
    graph = model.graph
    past_length = context - new_tokens
    by_name = {tensor.name: tensor for tensor in graph.inputs}
    logits = next(tensor for tensor in graph.outputs if tensor.name == roles.logits)
    presents = {tensor.name: tensor for tensor in graph.outputs}
    _free_names(model, ["input_ids", "position_ids", "logits", MASK_2D, "rope_cos", "rope_sin", "token_embeds",
                        "position_embeds", HIDDEN,
                        *(f"{kind}.{layer.index}" for layer in roles.layers
                          for kind in ("past_key", "past_value", "new_key", "new_value"))])
    shapes: dict[str, list[int]] = {}

    tokens = _retyped_input(model, by_name[roles.input_ids], "input_ids", np.int32, [1, new_tokens])
    shapes[tokens.name] = [1, new_tokens]
    by_name[roles.attention_mask].name = MASK_2D
    shapes[MASK_2D] = [1, context]
    positions = _position_input(model, cut, new_tokens)
    shapes[positions.name] = [1, new_tokens]
    rotary = cut.rotary
    host_tables: dict[str, tuple[str, np.ndarray]] = {}
    if embedding_on_host:
        gathers = [("token_embeds", tokens.name, embedding_gather(tokens))]
        gathers += [("position_embeds", positions.name, node) for node in cut.users if standard_op(node) == "Gather"]
        for name, index_input, gather in gathers:
            host_tables[name] = (index_input, embeds_input(model, gather, name, new_tokens))
            shapes[name] = [1, new_tokens, int(host_tables[name][1].shape[1])]
    rope: list[RopeTable] = []
    if rope_inputs:
        rope = replace_rotary(model, cut, positions, new_tokens, context)
        shapes.update({table.input: table.shape for table in rope})
    for layer in roles.layers:
        for past_name, present_name, kind in ((layer.past_key, layer.present_key, "key"),
                                              (layer.past_value, layer.present_value, "value")):
            past = by_name[past_name]
            past.name = f"past_{kind}.{layer.index}"
            shapes[past.name] = [1, roles.kv_heads, past_length, roles.head_dim]
            _new_only(model, presents[present_name], f"new_{kind}.{layer.index}", past.dtype,
                      [1, roles.kv_heads, new_tokens, roles.head_dim])
            if cache_dtype is not None and np.dtype(cache_dtype) != np.dtype(past.dtype):
                _cache_in(model, past, np.dtype(cache_dtype))
                _cache_out(model, f"new_{kind}.{layer.index}", np.dtype(cache_dtype))
    logits.name = "logits"
    if last_logits:
        _last_position_only(model, logits)
    lm_head = cut_lm_head(model, logits) if separate_lm_head else None
    remove_dead_nodes(graph)
    for tensor in (positions, tokens):
        if not tensor.outputs:
            graph.inputs = [t for t in graph.inputs if t is not tensor]
            del shapes[tensor.name]
    model.forget_names()
    return StaticStep(model, new_tokens, context, shapes, rope, host_tables, bool(rotary), lm_head)


def _last_position_only(model: Model, logits: gs.Tensor) -> None:
    """``--logits last``: lm_head reads the last position's hidden state only, so the logits
    are ``[1, 1, vocab]`` and the vocabulary projection runs once per step, not T times."""
    head = logits.inputs[0] if logits.inputs else None
    hidden = head.inputs[0] if head is not None and standard_op(head) in ("MatMul", "Gemm") else None
    if hidden is None or isinstance(hidden, gs.Constant) or (hidden.shape is not None and len(hidden.shape) != 3):
        raise UsageError("--logits last: the logits are not one MatMul of the [batch, tokens, hidden] states (lm_head); "
                         "use --logits all")
    last = gs.Variable(model.fresh_name("last_hidden"), dtype=hidden.dtype)
    bounds = [gs.Constant(model.fresh_name(f"last_{name}"), np.array([value], np.int64))
              for name, value in (("start", -1), ("end", np.iinfo(np.int64).max), ("axis", 1))]
    model.graph.nodes.append(gs.Node("Slice", model.fresh_name("last_position"), inputs=[hidden, *bounds], outputs=[last]))
    rewire(head, hidden, last)


def _free_names(model: Model, names: list[str]) -> None:
    """Rename tensors that hold a name the static interface gives to another tensor."""
    wanted = set(names)
    for tensor in list(model.graph.tensors().values()):
        if tensor.name in wanted:
            tensor.name = model.fresh_name(f"{tensor.name}_original")


def _retyped_input(model: Model, old: gs.Variable, name: str, dtype: type, shape: list[int]) -> gs.Variable:
    """A new graph input ``name`` replacing ``old``; readers that only use it as Gather indices
    read it directly (:func:`_as_indices`), the others through a Cast to ``old``'s dtype."""
    new = gs.Variable(name, dtype=np.dtype(dtype), shape=shape)
    cast_output: gs.Variable | None = None
    for node in list(old.outputs):
        if _reads_as_indices(node, old):
            _as_indices(node, old, new)
            continue
        if cast_output is None:
            cast_output = gs.Variable(model.fresh_name(f"{name}_{np.dtype(old.dtype).name}"), dtype=old.dtype)
            model.graph.nodes.append(gs.Node("Cast", model.fresh_name(f"{name}_cast"), {"to": onnx_type(old.dtype)},
                                             inputs=[new], outputs=[cast_output]))
        rewire(node, old, cast_output)
    model.graph.inputs = [new if tensor is old else tensor for tensor in model.graph.inputs]
    return new


#: Ops an index tensor may pass on its way to a Gather without its values changing.
_INDEX_PASS_THROUGH = frozenset({"Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity"})
_INT_TYPES = (onnx.TensorProto.INT32, onnx.TensorProto.INT64)


def _reads_as_indices(node: gs.Node, tensor: gs.Tensor) -> bool:
    """True if ``node`` only passes ``tensor`` (through reshapes and integer casts) to Gather
    indices or to a Cast into another type: then int32 values can be fed as they are, with no
    int64 arithmetic (positions and token ids fit int32)."""
    op = standard_op(node)
    if op == "Gather":
        return node.inputs[1] is tensor and node.inputs[0] is not tensor
    if op == "Cast" and node.attrs.get("to") not in _INT_TYPES:
        return node.inputs[0] is tensor
    passes = (op in _INDEX_PASS_THROUGH or (op == "Cast" and node.attrs.get("to") in _INT_TYPES)) and node.inputs[0] is tensor
    if not passes or any(t is tensor for t in node.inputs[1:]) or not node.outputs[0].outputs:
        return False
    return all(_reads_as_indices(reader, node.outputs[0]) for reader in node.outputs[0].outputs)


def _as_indices(node: gs.Node, old: gs.Tensor, new: gs.Tensor) -> None:
    """Feed ``new`` (int32) to ``node`` where it read ``old``, on to the Gathers: integer Casts
    are bypassed and reshaped copies become int32."""
    op = standard_op(node)
    if op == "Cast" and node.attrs.get("to") in _INT_TYPES:
        for reader in list(node.outputs[0].outputs):
            _as_indices(reader, node.outputs[0], new)
        return
    rewire(node, old, new)
    if op not in ("Gather", "Cast"):
        node.outputs[0].dtype = new.dtype
        for reader in list(node.outputs[0].outputs):
            _as_indices(reader, node.outputs[0], node.outputs[0])


def _position_input(model: Model, cut: PositionCut, new_tokens: int) -> gs.Variable:
    """The int32 ``position_ids`` [1, T] input, wired into every cut tensor's readers on the way
    to the position users."""
    if len(cut.tensors) == 1 and cut.tensors[0] in model.graph.inputs:
        return _retyped_input(model, cut.tensors[0], "position_ids", np.int32, [1, new_tokens])
    positions = gs.Variable("position_ids", dtype=np.dtype(np.int32), shape=[1, new_tokens])
    readers = cut.readers
    for tensor in cut.tensors:
        dtype, rank = cut.kinds[tensor.name]
        value: gs.Tensor = positions
        if rank != 2:
            shape = gs.Constant(model.fresh_name("position_shape"), np.array([1] * (rank - 1) + [-1], np.int64))
            value = _node(model, "Reshape", [value, shape], {}, np.dtype(np.int32))
        tensor_readers = [node for node in readers if any(t is tensor for t in node.inputs)]
        if all(_reads_as_indices(node, tensor) for node in tensor_readers):
            for node in tensor_readers:
                _as_indices(node, tensor, value)
            continue
        if dtype != np.int32:
            value = _node(model, "Cast", [value], {"to": onnx_type(dtype)}, dtype)
        for node in tensor_readers:
            rewire(node, tensor, value)
    model.graph.inputs.append(positions)
    return positions


def _node(model: Model, op: str, inputs: list[gs.Tensor], attrs: dict, dtype: np.dtype) -> gs.Variable:
    output = gs.Variable(model.fresh_name(f"position_{op.lower()}"), dtype=dtype)
    model.graph.nodes.append(gs.Node(op, model.fresh_name(f"position_{op.lower()}"), attrs, inputs=inputs, outputs=[output]))
    return output


def _cache_in(model: Model, past: gs.Variable, dtype: np.dtype) -> None:
    """The past input holds ``dtype`` (an fp16 cache): the graph casts it to what it computes in."""
    computed = gs.Variable(model.fresh_name(f"{past.name}_{np.dtype(past.dtype).name}"), dtype=past.dtype, shape=past.shape)
    for reader in list(past.outputs):
        rewire(reader, past, computed)
    model.graph.nodes.append(gs.Node("Cast", model.fresh_name(f"{past.name}_cast"), {"to": onnx_type(past.dtype)},
                                     inputs=[past], outputs=[computed]))
    past.dtype = dtype


def _cache_out(model: Model, name: str, dtype: np.dtype) -> None:
    """The new keys or values output ``name`` leaves the graph as ``dtype``."""
    graph = model.graph
    index, new = next((i, t) for i, t in enumerate(graph.outputs) if t.name == name)
    new.name = model.fresh_name(f"{name}_{np.dtype(new.dtype).name}")
    stored = gs.Variable(name, dtype=dtype, shape=new.shape)
    graph.nodes.append(gs.Node("Cast", model.fresh_name(f"{name}_cast"), {"to": onnx_type(dtype)}, inputs=[new], outputs=[stored]))
    outputs = list(graph.outputs)
    outputs[index] = stored
    graph.outputs = outputs


def _new_only(model: Model, present: gs.Tensor, name: str, dtype: np.dtype, shape: list[int]) -> None:
    """Replace the present output ``Concat(past, new)`` by ``new`` alone, named ``name``."""
    graph = model.graph
    concat = present.inputs[0]
    new = concat.inputs[1]
    if new in graph.inputs or new in graph.outputs or isinstance(new, gs.Constant):
        copy = gs.Variable(model.fresh_name(name), dtype=dtype)
        graph.nodes.append(gs.Node("Identity", model.fresh_name(f"{name}_copy"), inputs=[new], outputs=[copy]))
        new = copy
    present.name = model.fresh_name(f"{name}_concat")
    new.name = name
    new.dtype = dtype
    new.shape = shape
    graph.outputs = [new if tensor is present else tensor for tensor in graph.outputs]


