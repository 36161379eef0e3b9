"""Shared test setup: hypothesis profile (ci when CI is set, else dev) and small helpers."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from mapc.ir import load
from mapc.testing import load_profile

PROFILE = load_profile()
IR_VERSION = 10


def make_model(nodes, inputs, outputs, initializers=(), opset: int = 18, **kwargs) -> onnx.ModelProto:
    """A ModelProto from onnx.helper parts, stamped with an IR version onnxruntime loads."""
    graph = helper.make_graph(list(nodes), "test", list(inputs), list(outputs), list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION, **kwargs)


@pytest.fixture(scope="session")
def chromium():
    """Debian's headless Chromium, for the tests that render pages (the HTML report, the history
    plots); skipped locally without it, a failure in CI (``CI`` set)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is required in CI to render the HTML pages: apt-get install -y chromium")
        pytest.skip("chromium is not installed (apt-get install -y chromium); CI runs this test")
    return found


@pytest.fixture
def tmp_cwd(tmp_path, monkeypatch):
    """Run a test inside a fresh temporary directory."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def registry():
    """Let a test register passes of its own; the registry is restored afterwards."""
    from mapc.passes.registry import _REGISTRY

    saved = dict(_REGISTRY)
    yield
    _REGISTRY.clear()
    _REGISTRY.update(saved)


def append_to_first_output(model, op: str) -> None:
    """Recompute the model's first output as ``op(old output)`` (for deliberately broken passes)."""
    import onnx_graphsurgeon as gs

    output = model.graph.outputs[0]
    hidden = gs.Variable(model.fresh_name("hidden"), dtype=output.dtype, shape=output.shape)
    output.inputs[0].outputs[0] = hidden
    model.graph.nodes.append(gs.Node(op, inputs=[hidden], outputs=[output]))


#: The installed ``mapc`` console script of the interpreter running the tests (the venv need
#: not be activated, as in CI).
MAPC_SCRIPT = str(Path(sys.executable).parent / "mapc")


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


def model_of(nodes, initializers=(), inputs=("x",), shape=(2, 3)):
    """A float model of ``nodes``: the named inputs and the last node's output all of ``shape``."""
    return load(
        make_model(
            nodes,
            [helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)) for name in inputs],
            [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, list(shape))],
            [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in initializers],
        )
    )
