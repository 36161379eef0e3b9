"""The child process that asks QNN: ``python -m mapc.targets.qnn.child REQUEST.json``.

onnxruntime's QNN execution provider can abort the whole process (``terminate called ...
Processed N nodes. Expected to process M``) when a partition it took fails to build, so mapc
never loads it in its own process. The request names the model, the provider and session
options, and optionally a ``.npz`` of input samples to run and where to write the outputs.

The child registers the EP library of onnxruntime-qnn, picks its device, creates the session
with verbose logging (the per-node-unit ``Validation PASSED|FAILED`` lines go to stderr), prints
:data:`READY` once the session exists, runs the samples and prints :data:`RAN`. Only onnxruntime,
onnxruntime-qnn and numpy are imported here.
"""

from __future__ import annotations

import json
import sys
import time

#: Printed (to stderr, after onnxruntime's log) once the session is built: ``READY <seconds>``.
READY = "MAPC-QNN-READY"
#: Printed after the samples ran: ``RAN <seconds>``.
RAN = "MAPC-QNN-RAN"


def main(request_path: str) -> int:
    import numpy as np
    import onnxruntime as ort
    import onnxruntime_qnn as qnn

    with open(request_path, encoding="utf-8") as handle:
        request = json.load(handle)
    ort.register_execution_provider_library(qnn.get_ep_name(), qnn.get_library_path())
    devices = [device for device in ort.get_ep_devices() if device.ep_name == qnn.get_ep_name()]
    options = ort.SessionOptions()
    options.log_severity_level, options.log_verbosity_level = 0, 1
    if request.get("optimize") is False:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    for key, value in request.get("session_config", {}).items():
        options.add_session_config_entry(key, str(value))
    provider_options = {"backend_path": qnn.get_qnn_htp_path(), **request.get("provider_options", {})}
    options.add_provider_for_devices(devices[:1], provider_options)
    start = time.perf_counter()
    session = ort.InferenceSession(request["model"], options)
    print(f"{READY} {time.perf_counter() - start:.6f}", file=sys.stderr, flush=True)
    if request.get("inputs"):
        start = time.perf_counter()
        samples = np.load(request["inputs"])
        count = int(samples["count"])
        names = [i.name for i in session.get_inputs()]
        results = {}
        for k in range(count):
            feeds = {name: samples[f"{k}/{name}"] for name in names}
            for output, value in zip(session.get_outputs(), session.run(None, feeds)):
                results[f"{k}/{output.name}"] = value
        np.savez(request["outputs"], count=count, **results)
        print(f"{RAN} {time.perf_counter() - start:.6f}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
