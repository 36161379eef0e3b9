"""Seeded fuzzing of ``mapc compile`` with random valid graphs: every one compiles, and computes
what it computed before.

Each case is a random valid model from :func:`mapc.testing.onnx_models` (all op families,
symbolic batch dims included) compiled through the CLI entry point with one of several flag
sets: the default pipeline, ``--target npu`` (partitioned and lowered), the same with the batch
dim fixed, and ``--quantize a8w8 --calibration random`` with and without the target. A valid
model must compile (exit 0, nothing else on stderr that looks like a traceback, input untouched);
the compiled model must then run in onnxruntime on the realistic verification samples and match
the input's outputs within mapc's tolerances (quantized compiles: same names, dtypes, shapes and
finite values; see ``fuzz_support.assert_same_outputs``).

Cases come from hypothesis seeded with ``MAPC_FUZZ_SEED`` (default 0); ``MAPC_FUZZ_CASES`` sets
their number (300 in CI, 100 locally: thousands for a real fuzz run). A failure names the seed, the
case and the flags, and shows the model in ONNX text form; hypothesis then shrinks it.
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

import onnx
import onnx.printer
from hypothesis import HealthCheck, Phase, given, note, seed, settings
from hypothesis import strategies as st

from mapc.ir.errors import EXIT_OK
from mapc.testing import onnx_models
from tests.conftest import in_ci
from tests.e2e.fuzz_support import assert_same_outputs, compile_case, fuzz_cases, fuzz_seed

CASES = fuzz_cases(300 if in_ci() else 100)
SEED = fuzz_seed()
#: Fixed value of the symbolic batch dim for the flag sets that fix it.
BATCH = 3
#: name -> (flags, whether the batch dim is fixed, whether the result is quantized)
FLAG_SETS: dict[str, tuple[list[str], bool, bool]] = {
    "default": ([], False, False),
    "npu": (["--target", "npu"], False, False),
    "npu-static": (["--target", "npu", "--dim", f"N={BATCH}"], True, False),
    "a8w8": (["--quantize", "a8w8", "--calibration", "random"], False, True),
    "npu-a8w8": (["--target", "npu", "--quantize", "a8w8", "--calibration", "random", "--dim", f"N={BATCH}"], True, True),
}
_case_numbers = itertools.count()


def _has_batch_dim(model: onnx.ModelProto) -> bool:
    return any(d.dim_param == "N" for i in model.graph.input for d in i.type.tensor_type.shape.dim)


@seed(SEED)
@settings(max_examples=CASES, database=None, derandomize=False, phases=(Phase.generate, Phase.shrink),
          suppress_health_check=list(HealthCheck), deadline=None)
@given(model=onnx_models(max_ops=10), flag_set=st.sampled_from(sorted(FLAG_SETS)))
def test_random_graphs_compile_and_keep_their_outputs(model, flag_set):
    flags, fixes_batch, quantized = FLAG_SETS[flag_set]
    if fixes_batch and not _has_batch_dim(model):
        flags = [f for f in flags if f not in ("--dim", f"N={BATCH}")]
    case = next(_case_numbers)
    where = f"random graph, MAPC_FUZZ_SEED={SEED} case {case} (of MAPC_FUZZ_CASES={CASES}), flags {flags or 'none'}"
    note(onnx.printer.to_text(model))
    with tempfile.TemporaryDirectory(prefix="mapc-fuzz-") as folder:
        source, output = Path(folder) / "model.onnx", Path(folder) / "out.onnx"
        source.write_bytes(model.SerializeToString())
        compile_case(source, output, flags, where, allowed={EXIT_OK})
        dims = {"N": BATCH} if fixes_batch and _has_batch_dim(model) else None
        assert assert_same_outputs(source, output, where, dims=dims, quantized=quantized) > 0, f"{where}: the input ran on no sample"
