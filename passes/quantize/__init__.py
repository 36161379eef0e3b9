"""``quantize``: per-channel quantization to 8 bits and fewer, calibration, accuracy report.

Modules, one job each:

* :mod:`.schemes`: the schemes (a8w8, a16w8, w4, a16w4) and the scheme/target contract;
* :mod:`.qtypes`: integer types, scale and zero-point arithmetic;
* :mod:`.data`: calibration samples from files or ``random``;
* :mod:`.calibrate`: streaming range and histogram collection in onnxruntime;
* :mod:`.ranges`: calibration methods (minmax, percentile, entropy, mse) with fallbacks;
* :mod:`.placement`: which nodes and tensors are quantized, axes, ties, fixed ranges, folds;
* :mod:`.params`: activation parameters per tie group (masks, fixed ranges);
* :mod:`.weights`: per-channel and block-wise weights, int32 biases, bias correction;
* raising the opset a scheme needs: :func:`mapc.passes.opset_conversion.upgrade_verified`;
* :mod:`.emit`: writing QDQ, and the switchable probe behind the accuracy report;
* :mod:`.accuracy`: output metrics of the QDQ model against the float one;
* :mod:`.sensitivity`: per-tensor contributions, promotion to a target (the algorithm);
* :mod:`.state`: what a run found, shared by its steps, and the quantizers a switch setting gives;
* :mod:`.offenders`: the sensitivity step (units, probes, promotion) of a run;
* :mod:`.report`: the pass's counters and ``details``;
* :mod:`.quantize`: the pass (options, and run calling the steps).
"""

from mapc.passes.quantize.accuracy import HELD_OUT, HeldOut, OutputMetrics
from mapc.passes.quantize.data import open_calibration
from mapc.passes.quantize.qtypes import QUANT_TYPES
from mapc.passes.quantize.quantize import Quantize
from mapc.passes.quantize.schemes import SCHEMES, QuantizationSupport, Scheme, get_scheme, resolve

__all__ = [
    "HELD_OUT",
    "QUANT_TYPES",
    "HeldOut",
    "OutputMetrics",
    "SCHEMES",
    "QuantizationSupport",
    "Quantize",
    "Scheme",
    "get_scheme",
    "open_calibration",
    "resolve",
]
