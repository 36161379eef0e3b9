"""Targets described in TOML: the shipped example loads, and every mistake names its key."""

from __future__ import annotations

from pathlib import Path

import pytest

import mapc
from mapc.targets import constraints_for, get_target, load_target_file
from tests.targets.models import static_cnn

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "my_npu.toml"

MINIMAL = """
name = "mini"
[tensors]
dtypes = ["int8"]
[ops]
supported = ["Relu"]
[performance]
clock_mhz = 100
macs_per_cycle = { int8 = 64 }
vector_ops_per_cycle = 8
memory_gbps = 1
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "target.toml"
    path.write_text(text)
    return path


def test_the_shipped_example_loads_with_every_section():
    target = load_target_file(EXAMPLE)
    assert target.name == "camera-npu" and target.domain == "mapc.camera_npu"
    assert target.tensors.dtypes == {"int8", "uint8"} and target.tensors.max_batch == 1
    assert target.conv.max_kernel_area == 49 and target.conv.grouped is False
    assert target.ops.fused_patterns == (("Conv", "Relu"), ("Conv", "Clip"))
    assert target.ops.dtypes["DequantizeLinear"] == {"int8", "uint8", "int32"}
    assert target.performance.macs_per_cycle == {"int8": 1280, "uint8": 1280}
    assert target.host is not None and target.host.clock_mhz == 1200
    assert target.quantization.schemes == ("a8w8",) and target.quantization.activation_types == ("int8",)
    assert target.quantization.max_opset == 17
    assert str(target) == str(EXAMPLE) and target.origin == str(EXAMPLE)
    codes = {rule.code for rule in constraints_for(target)}
    assert {"conv.kernel-area", "tensor.batch", "matmul.constant-weights", "pool.kernel-area"} <= codes


def test_a_minimal_file_gets_the_default_host(tmp_path):
    target = load_target_file(write(tmp_path, MINIMAL))
    assert target.ops.supported == {"Relu"} and target.host is not None and target.host.clock_mhz == 2400


def test_base_starts_from_a_builtin_and_overrides_keys(tmp_path):
    target = load_target_file(write(tmp_path, 'name = "npu-lite"\nbase = "npu"\n[tensors]\nmax_rank = 3\n[performance]\ndispatch_us = 5\n'))
    npu = get_target("npu")
    assert target.tensors.max_rank == 3 and target.tensors.dtypes == npu.tensors.dtypes
    assert target.performance.dispatch_us == 5 and target.performance.clock_mhz == npu.performance.clock_mhz
    assert target.ops.supported == npu.ops.supported and target.domain == "mapc.npu_lite"


def test_compile_with_a_file_target_end_to_end(tmp_path):
    result = mapc.compile(static_cnn(size=32), target=str(EXAMPLE), verify=True)
    assert result.verification["ok"]
    assert result.report["target"]["name"] == "camera-npu"
    codes = {reason["code"] for entry in result.report["fallback"] for reason in entry["reasons"]}
    assert "dtype.data" in codes, "a float model does not run on an int8-only target"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour = 1\n" + MINIMAL, "key 'colour' is not a target setting"),
        (MINIMAL + "colour = 1\n", "key 'performance.colour' is not a setting of [performance]"),
        (MINIMAL.replace("[ops]", "[ops]\nsuported = []"), "key 'ops.suported' is not a setting of [ops] (known: control_flow, dtypes, fused_patterns, max_rank, supported)"),
        (MINIMAL.replace('dtypes = ["int8"]', 'dtypes = ["int7"]'), "key 'tensors.dtypes' names unknown dtype 'int7'"),
        (MINIMAL.replace('supported = ["Relu"]', 'supported = ["Reluu"]'), "key 'ops.supported' names unknown operator 'Reluu'"),
        (MINIMAL.replace("[tensors]", "[tensors]\nmax_rank = \"4\""), "key 'tensors.max_rank' must be a positive integer, got '4'"),
        (MINIMAL.replace("[tensors]", "[tensors]\nmax_rank = 0"), "key 'tensors.max_rank' must be a positive integer, got 0"),
        (MINIMAL.replace("[tensors]", "[tensors]\nstatic_shapes = 1"), "key 'tensors.static_shapes' must be true or false, got 1"),
        (MINIMAL.replace("clock_mhz = 100", "clock_mhz = \"fast\""), "key 'performance.clock_mhz' must be a non-negative number, got 'fast'"),
        (MINIMAL.replace("clock_mhz = 100", "clock_mhz = 0"), "key 'performance.clock_mhz' must be greater than 0"),
        (MINIMAL.replace("int8 = 64", "int9 = 64"), "key 'performance.macs_per_cycle.int9' names unknown dtype 'int9'"),
        (MINIMAL.replace("int8 = 64", "int8 = -1"), "key 'performance.macs_per_cycle.int8' must be a positive number, got -1"),
        (MINIMAL.replace("vector_ops_per_cycle = 8\n", ""), "key 'performance.vector_ops_per_cycle' is required"),
        (MINIMAL.replace('name = "mini"', ""), "key 'name' is required"),
        (MINIMAL.replace('name = "mini"', 'name = "my npu!"'), "key 'name' must be letters, digits"),
        (MINIMAL.replace('supported = ["Relu"]', ""), "key 'ops.supported' is required"),
        (MINIMAL.split("[performance]")[0], "key 'performance' is required"),
        (MINIMAL + '[ops.dtypes]\nRelu = "int8"\n', "key 'ops.dtypes.Relu' must be a list of strings, got 'int8'"),
        (MINIMAL.replace('supported = ["Relu"]', 'supported = ["Relu"]\nfused_patterns = ["Conv"]'), "key 'ops.fused_patterns' must be a list of op chains"),
        (MINIMAL.replace("[tensors]", "conv = 3\n[tensors]"), "key 'conv' must be a table ([conv])"),
        ('base = "cpu"\nname = "x"\n', "key 'base' must name a built-in accelerator (npu, ethos-u55, qnn-htp), got 'cpu'"),
        (MINIMAL + '[quantization]\nschemes = "a8w8"\n', "key 'quantization.schemes' must be a list of strings, got 'a8w8'"),
        (MINIMAL + '[quantization]\nactivation_types = ["int9"]\n', "key 'quantization.activation_types' names unknown dtype 'int9'"),
        (MINIMAL + "[quantization]\nblock_sizes = [32, 0]\n", "key 'quantization.block_sizes' must be a list of positive integers"),
        (MINIMAL + '[quantization]\nnorm_scale_type = "int16"\n', "key 'quantization.norm_scale_type' must be one of int8, uint8, got 'int16'"),
        (MINIMAL + '[quantization]\nnorm_bias_type = "int8"\n', "key 'quantization.norm_bias_type' must be one of int32, uint8, got 'int8'"),
        (MINIMAL + '[quantization]\nint4_ops = ["Conv"]\n', "key 'quantization.int4_ops' names 'Conv', which takes no int4 weight blocks"),
        ("name = \n", "not valid TOML"),
    ],
)
def test_mistakes_name_the_key(tmp_path, text, message):
    with pytest.raises(mapc.UsageError) as caught:
        load_target_file(write(tmp_path, text))
    assert message in str(caught.value)
    assert str(tmp_path / "target.toml") in str(caught.value)
    assert "\n" not in str(caught.value)


def test_ops_dtypes_table_is_checked(tmp_path):
    text = MINIMAL.replace("[ops]\n", "[ops]\ndtypes = { Relu = [\"int8\", \"int99\"] }\n")
    with pytest.raises(mapc.UsageError, match=r"key 'ops.dtypes.Relu' names unknown dtype 'int99'"):
        load_target_file(write(tmp_path, text))


def test_missing_file_and_unknown_target_names():
    with pytest.raises(mapc.UsageError, match="does not exist"):
        get_target("nowhere/missing.toml")
    with pytest.raises(mapc.UsageError, match="unknown target 'tpu' .built-in targets: npu, cpu, ethos-u55"):
        get_target("tpu")


def test_a_file_sets_the_normalization_scale_type(tmp_path):
    target = load_target_file(write(tmp_path, 'name = "htp-like"\nbase = "npu"\n[quantization]\nnorm_scale_type = "uint8"\n'))
    assert target.quantization.norm_scale_type == "uint8"


def test_a_file_sets_the_normalization_bias_type_and_a_qnn_base_keeps_uint8(tmp_path):
    target = load_target_file(write(tmp_path, 'name = "htp-like"\nbase = "npu"\n[quantization]\nnorm_bias_type = "uint8"\n'))
    assert target.quantization.norm_bias_type == "uint8"
    assert load_target_file(write(tmp_path, 'name = "my-htp"\nbase = "qnn-htp"\n')).quantization.norm_bias_type == "uint8"


def test_a_file_sets_the_int4_ops_and_a_qnn_base_keeps_matmul_only(tmp_path):
    inherited = load_target_file(write(tmp_path, 'name = "my-htp"\nbase = "qnn-htp:v75"\n'))
    assert inherited.quantization.int4_ops == ("MatMul",) and "a16w4" in inherited.quantization.schemes
    target = load_target_file(write(tmp_path, 'name = "my-htp"\nbase = "qnn-htp:v75"\n[quantization]\nint4_ops = ["MatMul", "Gemm"]\n'))
    assert target.quantization.int4_ops == ("MatMul", "Gemm")
