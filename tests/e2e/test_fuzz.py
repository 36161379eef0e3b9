"""Seeded fuzzing of ``mapc compile``: mutated models never cause a traceback, a hang or a
half-written output.

Each case mutates a valid model (byte flips, truncation, or an edit of one protobuf field that
real broken files show: dangling inputs, unknown ops, absurd opsets and dims, self-loops, short
raw data, escaping external paths...), runs the CLI entry point in-process under a time limit,
and checks (``fuzz_support.py``): the exit code is success or a documented error code, an error
is one line with no traceback, the input is untouched, the output folder holds either nothing
new or a complete model mapc can load again, and a mutant that still compiles computes, on every
realistic sample onnxruntime runs the mutant on, what the mutant computes. ``MAPC_FUZZ_CASES`` and
``MAPC_FUZZ_SEED`` scale and shift the run; every failure names its seed.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable
from pathlib import Path

import onnx
import pytest

from mapc.ir.errors import EXIT_BAD_MODEL, EXIT_OK
from tests.conftest import in_ci
from tests.e2e.fuzz_support import assert_same_outputs, compile_case, fuzz_cases, fuzz_seed

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CASES = fuzz_cases(400 if in_ci() else 150)

Mutation = Callable[[random.Random, onnx.ModelProto], None]


def _node(rng: random.Random, model: onnx.ModelProto) -> onnx.NodeProto:
    return model.graph.node[rng.randrange(len(model.graph.node))]


def dangling_input(rng, model):
    node = _node(rng, model)
    if node.input:
        node.input[rng.randrange(len(node.input))] = f"ghost_{rng.randrange(1000)}"


def unknown_op(rng, model):
    _node(rng, model).op_type = rng.choice(["Frob", "", "relu", "Conv2D", "\x00"])


def absurd_opset(rng, model):
    if not model.opset_import:
        model.opset_import.add(domain="")
    model.opset_import[0].version = rng.choice([-7, 0, 27, 1000, 2**31 - 1])


def remove_opsets(rng, model):
    del model.opset_import[:]


def absurd_input_dim(rng, model):
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[rng.randrange(len(dims))].dim_value = rng.choice([-1, 0, 2**40 + 1, 2**62])


def absurd_initializer_dims(rng, model):
    tensor = model.graph.initializer[rng.randrange(len(model.graph.initializer))]
    if tensor.dims:
        tensor.dims[rng.randrange(len(tensor.dims))] = rng.choice([-2, 0, 3, 2**41])


def self_loop(rng, model):
    node = _node(rng, model)
    if node.input and node.output:
        node.input[0] = node.output[0]


def two_node_cycle(rng, model):
    first, second = rng.sample(list(model.graph.node), 2)
    if first.input and second.input:
        first.input[0], second.input[0] = second.output[0], first.output[0]


def short_raw_data(rng, model):
    tensors = [t for t in model.graph.initializer if t.raw_data]
    if tensors:
        tensor = rng.choice(tensors)
        tensor.raw_data = tensor.raw_data[: rng.randrange(len(tensor.raw_data))]


def bad_element_type(rng, model):
    rng.choice(list(model.graph.initializer)).data_type = rng.choice([0, 99, onnx.TensorProto.STRING])


def duplicate_output(rng, model):
    first, second = rng.sample(list(model.graph.node), 2)
    second.output[0] = first.output[0]


def drop_graph_output_producer(rng, model):
    model.graph.output[0].name = "missing_output"


def shuffle_nodes(rng, model):
    nodes = list(model.graph.node)
    rng.shuffle(nodes)
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def wrong_attribute_type(rng, model):
    nodes = [n for n in model.graph.node if n.attribute]
    if nodes:
        attribute = rng.choice(nodes).attribute[0]
        attribute.type = rng.choice([onnx.AttributeProto.FLOAT, onnx.AttributeProto.STRING, onnx.AttributeProto.GRAPH])


def escaping_external_data(rng, model):
    tensor = rng.choice(list(model.graph.initializer))
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    del tensor.external_data[:]
    tensor.external_data.add(key="location", value=rng.choice(["../../etc/passwd", "/etc/passwd", "missing.bin", ""]))


def wrong_ir_version(rng, model):
    model.ir_version = rng.choice([0, -1, 14, 99])


def drop_required_input(rng, model):
    node = _node(rng, model)
    if node.input:
        del node.input[:]


STRUCTURED: list[Mutation] = [
    dangling_input, unknown_op, absurd_opset, remove_opsets, absurd_input_dim, absurd_initializer_dims,
    self_loop, two_node_cycle, short_raw_data, bad_element_type, duplicate_output, drop_graph_output_producer,
    shuffle_nodes, wrong_attribute_type, escaping_external_data, wrong_ir_version, drop_required_input,
]


def mutate(seed: int, base: bytes) -> bytes:
    rng = random.Random(seed)
    kind = rng.choice(["flip", "truncate", "edit", "edit", "edit"])
    if kind == "flip":
        data = bytearray(base)
        for _ in range(rng.randint(1, 12)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if kind == "truncate":
        return base[: rng.randrange(len(base))]
    model = onnx.load_from_string(base)
    for mutation in rng.sample(STRUCTURED, rng.randint(1, 2)):
        mutation(rng, model)
    return model.SerializeToString()


@pytest.mark.parametrize("base_name", ["cnn.onnx", "transformer.onnx"])
def test_mutated_models_fail_cleanly(tmp_path, base_name):
    base = (EXAMPLES / base_name).read_bytes()
    outcomes: dict[int, int] = {}
    compared = 0
    first = fuzz_seed()
    for seed in range(first, first + CASES):
        case = tmp_path / f"case{seed}"
        case.mkdir()
        source = case / "model.onnx"
        source.write_bytes(mutate(seed, base))
        output = case / "out.onnx"
        where = f"{base_name} seed {seed} (rerun: MAPC_FUZZ_SEED={seed} MAPC_FUZZ_CASES=1)"
        outcome = compile_case(source, output, [], where)
        if outcome.code == EXIT_OK:
            compared += assert_same_outputs(source, output, where) > 0
        outcomes[outcome.code] = outcomes.get(outcome.code, 0) + 1
        shutil.rmtree(case)
    if CASES >= 100:
        assert outcomes.get(EXIT_BAD_MODEL, 0) > CASES // 2, outcomes  # the mutations really break models
        assert compared > 0, outcomes  # some mutants still compile, and were checked differentially
