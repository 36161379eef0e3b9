"""Rebuild the sample reports in this folder from the example models.

    python docs/sample-report/build.py [EXAMPLES_FOLDER]

Each sample is one ``mapc compile`` of an example model for the ``npu`` target with its input
shapes fixed (``--input-shape``): the CNN at batch 8 and the transformer at batch 1, sequence
64 (its position table), both verified against the input model; and the transformer again,
quantized with the npu's default scheme (``--quantize --calibration random``), whose report
adds the quantization accuracy. Each writes ``<name>.json`` and ``<name>.html``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import mapc
from mapc.report import write_report

HERE = Path(__file__).resolve().parent
TRANSFORMER_SHAPES = {"input_ids": [1, 64], "attention_mask": [1, 64]}
SAMPLES: dict[str, tuple[str, dict[str, Any]]] = {
    "cnn-npu": ("cnn", {"input_shapes": {"image": [8, 3, 32, 32]}, "verify": True}),
    "transformer-npu": ("transformer", {"input_shapes": TRANSFORMER_SHAPES, "verify": True}),
    "transformer-npu-a8w8": ("transformer", {"input_shapes": TRANSFORMER_SHAPES, "quantize": {"calibration": "random"}}),
}


def main() -> None:
    folder = (Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parents[1] / "examples").resolve()
    with tempfile.TemporaryDirectory() as scratch:
        os.chdir(scratch)  # the compiled models are written here, so the reports name them relatively
        for name, (model, options) in SAMPLES.items():
            result = mapc.compile(folder / f"{model}.onnx", target="npu", **options)
            result.source = f"examples/{model}.onnx"
            written = result.save(f"{model}.mapc.onnx")
            for suffix in (".json", ".html"):
                path = HERE / f"{name}{suffix}"
                write_report(path, result, output=written)
                print(f"wrote {path}")


if __name__ == "__main__":
    main()
