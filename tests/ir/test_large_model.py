"""A model whose weights exceed 2 GB loads, compiles and saves with bounded memory.

The weights (2.5 GiB in external data) are written in chunks, never held in memory; the CLI
runs in a child process whose peak resident memory is read with ``wait4``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.conftest import MAPC_SCRIPT

N = 16384  # a [N, N] float32 weight is exactly 1 GiB
SHAPES = {"w1": (N, N), "w2": (N, N), "w3": (N // 2, N)}
CHUNK_ROWS = 512


def write_weights(folder: Path) -> list[onnx.TensorProto]:
    """Write every weight to weights.bin in chunks; return data-less external TensorProtos."""
    tensors = []
    offset = 0
    with open(folder / "weights.bin", "wb") as handle:
        for index, (name, (rows, cols)) in enumerate(SHAPES.items()):
            for start in range(0, rows, CHUNK_ROWS):
                block = (np.arange(start, start + CHUNK_ROWS, dtype=np.float32)[:, None] + np.arange(cols, dtype=np.float32) * (index + 1)) % 97
                handle.write(block.astype(np.float32).tobytes())
            length = rows * cols * 4
            tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[rows, cols], data_location=TensorProto.EXTERNAL)
            for key, value in (("location", "weights.bin"), ("offset", str(offset)), ("length", str(length))):
                tensor.external_data.add(key=key, value=value)
            tensors.append(tensor)
            offset += length
    return tensors


def build(folder: Path) -> Path:
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h1"]),
        helper.make_node("Identity", ["h1"], ["h1_copy"]),
        helper.make_node("MatMul", ["h1_copy", "w2"], ["h2"]),
        helper.make_node("MatMul", ["w3", "h2_t"], ["unused"]),
        helper.make_node("Transpose", ["h2"], ["h2_t"]),
        helper.make_node("Relu", ["h2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, N])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, N])],
        write_weights(folder),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    path = folder / "big.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def run_with_peak_rss(arguments: list[str]) -> tuple[int, int, str]:
    """Run a command; return (exit code, peak RSS in bytes, stderr)."""
    process = subprocess.Popen(arguments, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    stderr = process.stderr.read().decode() if process.stderr else ""
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_maxrss * 1024, stderr


@pytest.mark.slow
def test_model_over_two_gigabytes_compiles_with_bounded_memory(tmp_path):
    source_dir, out_dir = tmp_path / "in", tmp_path / "out"
    source_dir.mkdir()
    out_dir.mkdir()
    source = build(source_dir)
    weight_bytes = (source_dir / "weights.bin").stat().st_size
    assert weight_bytes > 2 << 30

    code, peak, stderr = run_with_peak_rss([MAPC_SCRIPT, "compile", str(source), "-o", str(out_dir / "big.mapc.onnx"), "-q"])
    assert code == 0, stderr
    assert peak < weight_bytes // 4, f"peak RSS {peak / 2**20:.0f} MiB for {weight_bytes / 2**20:.0f} MiB of weights"

    compiled = onnx.load(out_dir / "big.mapc.onnx", load_external_data=False)
    assert [n.op_type for n in compiled.graph.node] == ["MatMul", "MatMul", "Relu"]
    kept = {t.name: t for t in compiled.graph.initializer}
    assert set(kept) == {"w1", "w2"}
    data = out_dir / "big.mapc.onnx.data"
    assert data.stat().st_size >= 2 * N * N * 4
    source_map = {t.name: t for t in onnx.load(source, load_external_data=False).graph.initializer}
    for name in kept:
        new_info = {e.key: e.value for e in kept[name].external_data}
        old_info = {e.key: e.value for e in source_map[name].external_data}
        assert new_info["location"] == "big.mapc.onnx.data"
        new = np.memmap(data, np.float32, "r", int(new_info["offset"]), (N, N))
        old = np.memmap(source_dir / "weights.bin", np.float32, "r", int(old_info["offset"]), (N, N))
        for row in (0, 1, N // 2, N - 1):
            np.testing.assert_array_equal(new[row], old[row])
