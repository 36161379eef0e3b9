"""Which input and output of a decoder export plays which part: tokens, mask, positions, KV cache, logits.

Exporters name these differently (``past_key_values.0.key``, ``past.0.k``, ``cache_k_0``...),
so roles come from the graph's structure first and names second:

* the **token input** is the integer input whose values index the embedding table (a Gather
  of a float initializer ``[vocab, hidden]``): that table gives the vocabulary size;
* a **past K/V input** is a rank-4 float input that a ``Concat`` joins with the new keys or
  values; the Concat's output, when it is a graph output, is the matching **present** output;
  key or value, and the layer, come from the name (``key``/``value``, ``k``/``v``, the first
  number in it) or, failing that, from the order of the inputs;
* the **mask input** is the remaining rank-2 integer/bool/float input whose name says mask;
  the **position input** (optional) the remaining integer input whose name says position;
* the **logits** are the float output that is not a present output.

:func:`find_roles` raises a one-line :class:`~mapc.ir.UsageError` naming the role it could not
find and the flag that names it (``--role ROLE=NAME``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import Model, UsageError, consumers, standard_op

#: Roles a user can name with ``--role ROLE=NAME`` (past/present are found per layer).
NAMEABLE_ROLES = ("input_ids", "attention_mask", "position_ids", "logits")
_INT_KINDS = "iu"
#: Ops between a token input and its embedding Gather that keep the values (casts, reshapes).
_PASS_THROUGH = frozenset({"Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity"})


@dataclass(frozen=True)
class KVLayer:
    """One decoder layer's cache: past inputs and present outputs, keys and values."""

    index: int
    past_key: str
    past_value: str
    present_key: str
    present_value: str


@dataclass(frozen=True)
class DecoderRoles:
    """The parts of a decoder's interface, by tensor name, plus the cache geometry."""

    input_ids: str
    attention_mask: str
    position_ids: str | None
    logits: str
    layers: tuple[KVLayer, ...]
    vocab_size: int
    kv_heads: int
    head_dim: int
    #: The axis of a past K/V input that grows with the sequence (2 for [B, H, S, D]).
    sequence_axis: int = 2

    @property
    def past_inputs(self) -> list[str]:
        return [name for layer in self.layers for name in (layer.past_key, layer.past_value)]

    @property
    def present_outputs(self) -> list[str]:
        return [name for layer in self.layers for name in (layer.present_key, layer.present_value)]


def find_roles(model: Model, named: Mapping[str, str] | None = None) -> DecoderRoles:
    """The roles of ``model``'s inputs and outputs; ``named`` fixes some by hand (role -> name)."""
    named = dict(named or {})
    unknown = sorted(set(named) - set(NAMEABLE_ROLES))
    if unknown:
        raise UsageError(f"--role {unknown[0]}: unknown role; choose from {', '.join(NAMEABLE_ROLES)}")
    graph = model.graph
    inputs = {tensor.name: tensor for tensor in graph.inputs}
    outputs = {tensor.name: tensor for tensor in graph.outputs}
    for role, name in named.items():
        if name not in (outputs if role == "logits" else inputs):
            raise UsageError(f"--role {role}={name}: the model has no {'output' if role == 'logits' else 'input'} {name!r}")

    pairs = _cache_pairs(graph)
    if not pairs:
        raise UsageError("cannot find the KV cache: no rank-4 float input is concatenated with new keys/values "
                         "into a graph output (export the decoder with use_cache=True)")
    layers, kv_heads, head_dim = _layers(pairs)
    taken = {name for layer in layers for name in (layer.past_key, layer.past_value)}

    input_ids = named.get("input_ids") or _token_input(graph, taken)
    if input_ids is None:
        raise UsageError("cannot find the token-id input (no integer input indexes an embedding table); "
                         "name it with --role input_ids=NAME")
    vocab = _vocab_size(inputs[input_ids])
    if vocab is None:
        raise UsageError(f"cannot find the embedding table that input {input_ids!r} indexes; name the token input "
                         "with --role input_ids=NAME")
    taken.add(input_ids)
    rest = [tensor for name, tensor in inputs.items() if name not in taken]
    mask = named.get("attention_mask") or _by_name(rest, ("attention_mask", "mask"), rank=2)
    if mask is None:
        raise UsageError("cannot find the attention-mask input (a rank-2 input named like 'attention_mask'); "
                         "name it with --role attention_mask=NAME")
    rest = [tensor for tensor in rest if tensor.name != mask]
    positions = named.get("position_ids") or _by_name(rest, ("position_ids", "position"), rank=None, integer=True)
    rest = [tensor for tensor in rest if tensor.name != positions]
    if rest:
        raise UsageError(f"input {rest[0].name!r} plays no role mapc knows in a decoder (tokens, mask, positions, "
                         "KV cache); name it with --role ROLE=NAME")
    cache_outputs = {name for layer in layers for name in (layer.present_key, layer.present_value)}
    logits = named.get("logits") or _logits(graph, cache_outputs)
    if logits is None:
        raise UsageError("cannot find the logits output (a float output that is not a KV-cache output); "
                         "name it with --role logits=NAME")
    return DecoderRoles(input_ids, mask, positions, logits, tuple(layers), vocab, kv_heads, head_dim)


def _cache_pairs(graph: gs.Graph) -> list[tuple[gs.Variable, gs.Tensor]]:
    """(past input, present output) for each input a Concat on its sequence axis grows into an output."""
    outputs = {id(tensor) for tensor in graph.outputs}
    pairs = []
    for tensor in graph.inputs:
        if tensor.shape is None or len(tensor.shape) != 4 or tensor.dtype is None or np.dtype(tensor.dtype).kind != "f":
            continue
        for same in _copies(tensor):
            for node in consumers(same):
                if standard_op(node) == "Concat" and node.inputs[0] is same and len(node.inputs) == 2 \
                        and id(node.outputs[0]) in outputs and node.attrs.get("axis") in (2, -2):
                    pairs.append((tensor, node.outputs[0]))
    return pairs


def _copies(tensor: gs.Tensor) -> list[gs.Tensor]:
    """``tensor`` and what Identity nodes and one-input Concats (the TorchScript exporter writes
    one for an empty DynamicCache) copy it into."""
    found = [tensor]
    for node in consumers(tensor):
        if (standard_op(node) == "Identity" or (standard_op(node) == "Concat" and len(node.inputs) == 1)) \
                and node.inputs[0] is tensor:
            found += _copies(node.outputs[0])
    return found


_LAYER_NUMBER = re.compile(r"(\d+)")
_VALUE_NAME = re.compile(r"(value|(^|[._/])v($|[._/\d]))", re.IGNORECASE)
_KEY_NAME = re.compile(r"(key|(^|[._/])k($|[._/\d]))", re.IGNORECASE)


def _layers(pairs: list[tuple[gs.Variable, gs.Tensor]]) -> tuple[list[KVLayer], int, int]:
    keys: dict[int, tuple[str, str]] = {}
    values: dict[int, tuple[str, str]] = {}
    for order, (past, present) in enumerate(pairs):
        number = _LAYER_NUMBER.search(past.name)
        index = int(number.group(1)) if number else order // 2
        is_value = bool(_VALUE_NAME.search(past.name)) and not _KEY_NAME.search(past.name.replace("key_values", ""))
        if not _VALUE_NAME.search(past.name) and not _KEY_NAME.search(past.name):
            is_value = order % 2 == 1
        (values if is_value else keys)[index] = (past.name, present.name)
    if set(keys) != set(values):
        raise UsageError(f"the KV cache inputs do not pair into keys and values per layer (keys for layers "
                         f"{sorted(keys)}, values for {sorted(values)})")
    first = pairs[0][0]
    kv_heads, head_dim = first.shape[1], first.shape[3]
    for past, _ in pairs:
        if past.shape[1] != kv_heads or past.shape[3] != head_dim or not isinstance(kv_heads, int) or not isinstance(head_dim, int):
            raise UsageError(f"KV cache input {past.name!r} has shape {past.shape}: mapc needs [batch, kv_heads, past, "
                             "head_dim] with the same static heads and head size in every layer")
    layers = [KVLayer(i, keys[i][0], values[i][0], keys[i][1], values[i][1]) for i in sorted(keys)]
    return layers, kv_heads, head_dim


def embedding_gather(tensor: gs.Tensor, depth: int = 4) -> gs.Node | None:
    """The Gather whose indices are ``tensor`` (through casts and reshapes) and data a float table."""
    for node in consumers(tensor):
        op_type = standard_op(node)
        if op_type == "Gather" and len(node.inputs) > 1 and node.inputs[1] is tensor:
            table = node.inputs[0]
            if isinstance(table, gs.Constant) and table.shape is not None and len(table.shape) == 2 \
                    and np.dtype(table.dtype).kind == "f":
                return node
        elif op_type in _PASS_THROUGH and depth > 0 and node.inputs[0] is tensor:
            found = embedding_gather(node.outputs[0], depth - 1)
            if found is not None:
                return found
    return None


def _token_input(graph: gs.Graph, taken: set[str]) -> str | None:
    candidates = [tensor for tensor in graph.inputs if tensor.name not in taken and tensor.dtype is not None
                  and np.dtype(tensor.dtype).kind in _INT_KINDS and embedding_gather(tensor) is not None]
    if len(candidates) > 1:
        by_name = [tensor for tensor in candidates if "input_ids" in tensor.name]
        candidates = by_name or candidates
    return candidates[0].name if len(candidates) == 1 else None


def _vocab_size(tensor: gs.Tensor) -> int | None:
    gather = embedding_gather(tensor)
    return None if gather is None else int(gather.inputs[0].shape[0])


def _by_name(tensors: list[gs.Variable], words: tuple[str, ...], *, rank: int | None, integer: bool = False) -> str | None:
    for word in words:
        found = [tensor for tensor in tensors if word in tensor.name.lower()
                 and (rank is None or (tensor.shape is not None and len(tensor.shape) == rank))
                 and (not integer or (tensor.dtype is not None and np.dtype(tensor.dtype).kind in _INT_KINDS))]
        if len(found) == 1:
            return found[0].name
    return None


def _logits(graph: gs.Graph, cache_outputs: set[str]) -> str | None:
    found = [tensor for tensor in graph.outputs if tensor.name not in cache_outputs
             and tensor.dtype is not None and np.dtype(tensor.dtype).kind == "f"]
    return found[0].name if len(found) == 1 else None


