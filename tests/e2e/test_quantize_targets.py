"""``compile(target=T, quantize=...)``: the target's quantization section picks scheme and placement."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

import mapc
from mapc.ir import run
from mapc.passes.quantize import resolve
from mapc.passes.quantize.schemes import QuantizationSupport
from mapc.targets import get_target, load_target_file
from tests.targets.models import static_cnn

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RANDOM = {"calibration": "random"}


def qdq_types(model: onnx.ModelProto) -> set[str]:
    """Element types written by the QuantizeLinear nodes (their zero points), also inside the
    partitions lowering made into functions (their zero points are Constant nodes there)."""
    constants = {t.name: t for t in model.graph.initializer}
    bodies = [model.graph.node, *(function.node for function in model.functions)]
    for nodes in bodies:
        constants.update({n.output[0]: n.attribute[0].t for n in nodes if n.op_type == "Constant" and n.attribute[0].name == "value"})
    types = set()
    for nodes in bodies:
        for node in nodes:
            if node.op_type == "QuantizeLinear" and len(node.input) > 2 and node.input[2] in constants:
                types.add(onnx.helper.tensor_dtype_to_np_dtype(constants[node.input[2]].data_type).name)
    return types


def test_quantize_on_the_npu_uses_its_default_scheme_and_runs_every_mac_there():
    result = mapc.compile(static_cnn(size=32), target="npu", quantize=RANDOM)
    assert result.report["options"]["quantize"]["scheme"] == "a8w8"
    proto = result.model.to_proto()
    assert qdq_types(proto) == {"uint8"}, "the npu's 8-bit activations are uint8"
    assert result.report["coverage"]["macs_percent"] == 100.0
    feeds = {"image": np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)}
    assert all(np.isfinite(v).all() for v in run(result.model, feeds).values())


def test_ethos_u55_gets_int8_activations_and_refuses_schemes_it_does_not_run():
    result = mapc.compile(static_cnn(size=32), target="ethos-u55", quantize=RANDOM)
    assert qdq_types(result.model.to_proto()) == {"int8"}
    assert result.report["coverage"]["macs_percent"] == 100.0
    with pytest.raises(mapc.UsageError, match="does not run scheme 'a16w8' .it runs: a8w8."):
        mapc.compile(static_cnn(size=32), target="ethos-u55", quantize={**RANDOM, "scheme": "a16w8"})


def test_a_target_without_schemes_refuses_quantization(tmp_path):
    path = tmp_path / "float_npu.toml"
    path.write_text('name = "float-npu"\nbase = "npu"\n[quantization]\nschemes = []\n')
    with pytest.raises(mapc.UsageError, match="runs no quantized models"):
        mapc.compile(static_cnn(size=32), target=str(path), quantize=RANDOM)


def test_the_target_sets_the_wide_type_and_the_qdq_domain():
    npu = get_target("npu").quantization
    assert resolve(None, npu)["scheme"] == "a8w8"
    assert resolve("a8w8", npu)["wide_activation_type"] == "int16", "mask paths and promotions use a type the npu has"
    assert resolve("a16w8", npu)["activation_type"] == "int16"
    old_toolchain = QuantizationSupport(schemes=("a8w8", "a16w8", "w4"), activation_types=("uint8", "uint16"), max_opset=17)
    assert "qdq_domain" not in resolve("a8w8", old_toolchain), "8-bit Q/DQ is standard at opset 13"
    assert resolve("a16w8", old_toolchain)["qdq_domain"] == "com.microsoft"
    with pytest.raises(mapc.UsageError, match="needs opset 21"):
        resolve("w4", old_toolchain)


def test_the_example_target_file_quantizes_the_example_cnn():
    target = load_target_file(EXAMPLES / "my_npu.toml")
    result = mapc.compile(EXAMPLES / "cnn.onnx", target=str(EXAMPLES / "my_npu.toml"), input_shapes={"image": [1, 3, 32, 32]}, quantize=RANDOM)
    assert qdq_types(result.model.to_proto()) == set(target.quantization.activation_types)
    assert result.report["coverage"]["macs_percent"] == 100.0


def test_quantizing_picks_the_integer_mask_fill_so_the_mask_path_is_quantized():
    shapes = {"input_ids": [1, 16], "attention_mask": [1, 16]}
    result = mapc.compile(EXAMPLES / "transformer.onnx", target="npu", input_shapes=shapes, quantize=RANDOM)
    masks = [record for record in result.passes if record.name == "attention-mask"]
    assert masks and all(record.details["precision"] == "int8" and record.details["mask_value"] == -20.0 for record in masks)
    quantize = next(record for record in result.passes if record.name == "quantize")
    assert not quantize.details["excluded"], "with a -20 fill no tensor needs to stay in float"
    assert quantize.details["accuracy"]["outputs"][0]["sqnr_db"] > 20
    assert result.report["coverage"]["nodes_percent"] > 90


def test_a_fill_the_user_chose_is_kept():
    shapes = {"input_ids": [1, 16], "attention_mask": [1, 16]}
    result = mapc.compile(
        EXAMPLES / "transformer.onnx", input_shapes=shapes, quantize=RANDOM, pass_options={"attention-mask": {"precision": "fp16"}}
    )
    masks = [record for record in result.passes if record.name == "attention-mask"]
    assert masks and all(record.details["mask_value"] == -1e4 for record in masks)


def test_the_html_report_shows_the_quantization_accuracy(tmp_path):
    from mapc.report import write_report

    result = mapc.compile(static_cnn(size=32), target="npu", quantize=RANDOM)
    page = write_report(tmp_path / "report.html", result).read_text()
    quantize = next(record for record in result.passes if record.name == "quantize")
    output = quantize.details["accuracy"]["outputs"][0]
    assert "<h2>Quantization: a8w8: uint8 activations" in page
    assert f"<td>{output['output']}</td><td class=\"num\">{output['sqnr_db']:.1f}</td>" in page
    assert "Top offenders" in page
