"""Accuracy on the silicon: the quantized model run on QNN's HTP emulator (``--accuracy-on qnn``).

The quantize pass measures its accuracy report by running the QDQ model on the CPU, which
simulates the integer arithmetic; the HTP computes it its own way (fused requantization,
16-bit lookup tables, fp16 islands). :func:`accuracy_on_qnn` runs the compiled model on the
emulator on the quantize pass's held-out samples (at most
:data:`~mapc.passes.quantize.accuracy.HELD_OUT_LIMIT`: the emulator is slow) and reports, per
output, the same metrics (SQNR, cosine, max error, top-1) for the HTP and, on the same samples,
for the CPU QDQ simulation, and names every output where the two differ by more than
:data:`DIVERGENCE_DB` (below :data:`EXACT_ENOUGH_DB`, where both are exact to the arithmetic's precision).
"""

from __future__ import annotations

import time
from typing import Any

from mapc.ir import CheckFailed, Model, Runner
from mapc.passes.quantize import HeldOut, OutputMetrics
from mapc.targets.qnn.agreement import qnn_options, require_qnn_target
from mapc.targets.qnn.oracle import QnnCheck, ask_qnn
from mapc.targets.spec import Target

#: An HTP SQNR this far from the CPU simulation's is called out...
DIVERGENCE_DB = 1.0
#: ...unless it is above this: both are then exact to the precision of the arithmetic.
EXACT_ENOUGH_DB = 60.0


def accuracy_on_qnn(model: Model, target: Target, held_out: HeldOut, check: QnnCheck | None = None) -> dict[str, Any]:
    """The accuracy report of ``model`` run on the HTP emulator beside the CPU's (see module doc).

    ``check``: a QNN build of ``model`` that already ran ``held_out.samples`` (``--check-with-qnn``
    asks for them), so the emulator is not started twice.
    """
    require_qnn_target(target, "--accuracy-on qnn")
    arch, options = qnn_options(target)
    started = time.perf_counter()
    if check is None:
        check = ask_qnn(model, arch=arch, provider_options=options, samples=held_out.samples)
        seconds = time.perf_counter() - started
    else:
        seconds = (check.build_seconds or 0.0) + (check.run_seconds or 0.0)
    if not check.built or check.outputs is None or len(check.outputs) != len(held_out.samples):
        raise CheckFailed(f"--accuracy-on qnn: QNN did not run the model: {check.error or 'no outputs'}")
    references = held_out.reference_outputs()
    on_htp, on_cpu = OutputMetrics(held_out.classifier_like), OutputMetrics(held_out.classifier_like)
    cpu = Runner(model)
    for sample, reference, htp_outputs in zip(held_out.samples, references, check.outputs):
        on_htp.add(reference, htp_outputs)
        on_cpu.add(reference, cpu.run(sample))
    htp_rows, cpu_rows = on_htp.results(), {row["output"]: row for row in on_cpu.results()}
    divergent = []
    for row in htp_rows:
        cpu_row = cpu_rows.get(row["output"], {})
        row["cpu_sqnr_db"] = cpu_row.get("sqnr_db")
        device, simulated = row.get("sqnr_db"), row["cpu_sqnr_db"]
        if device is not None and simulated is not None and abs(device - simulated) > DIVERGENCE_DB and device < EXACT_ENOUGH_DB:
            divergent.append(row["output"])
    return {
        "device": f"QNN HTP v{arch} (emulated)",
        "samples": len(held_out.samples),
        "seconds": round(seconds, 3),
        "run_seconds": check.run_seconds,
        "outputs": htp_rows,
        "divergent_outputs": divergent,
    }
