"""Rebuild the sample reports in this folder from the example models.

    python docs/sample-report/build.py [EXAMPLES_FOLDER]

The examples' batch and sequence dims are symbolic and an NPU needs them fixed, so the script
fixes them (what ``--input-shape`` does once the fix-shapes pass is in the default pipeline):
the CNN to batch 8, the transformer to batch 1 and sequence 64 (its position table). It compiles both for ``npu``
with verification and writes ``<model>-npu.json`` and ``<model>-npu.html``. The transformer
still carries the exporter's shape arithmetic, so its report shows what falls back and why.
"""

from __future__ import annotations

import sys
from pathlib import Path

import onnx

import mapc
from mapc.report import write_report

HERE = Path(__file__).resolve().parent
SAMPLES = {"cnn": {"batch": 8}, "transformer": {"batch": 1, "sequence": 64}}


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parents[1] / "examples"
    for model, dims in SAMPLES.items():
        proto = onnx.load(str(folder / f"{model}.onnx"))
        for value in [*proto.graph.input, *proto.graph.output]:
            for dim in value.type.tensor_type.shape.dim:
                if dim.dim_param in dims:
                    dim.dim_value = dims[dim.dim_param]
        del proto.graph.value_info[:]
        result = mapc.compile(proto, target="npu", verify=True)
        fixed = ", ".join(f"{name}={value}" for name, value in dims.items())
        result.source = f"examples/{model}.onnx ({fixed})"
        for suffix in (".json", ".html"):
            path = HERE / f"{model}-npu{suffix}"
            write_report(path, result, output=Path(f"{model}.mapc.onnx"))
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
