"""Using mapc from Python: compile an example model, look at what each pass did, save it.

    python examples/api_example.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import mapc

HERE = Path(__file__).resolve().parent


def main() -> None:
    result = mapc.compile(HERE / "transformer.onnx", verify=True)
    for record in result.passes:
        done = {name: count for name, count in record.counters.items() if count}
        print(f"{record.name:<16} {record.nodes_before:>4} -> {record.nodes_after:<4} {record.seconds * 1000:7.1f} ms  {done}")
    print("outputs match the input model:", result.verification["ok"])

    # A pass of your own: registered by name, usable in pipelines like the built-in ones.
    @mapc.register_pass(name="count-matmuls", replace=True)
    def count_matmuls(model: mapc.Model, ctx: mapc.PassContext, options: object) -> mapc.PassResult:
        """Count MatMul nodes (changes nothing)."""
        count = sum(node.op == "MatMul" for node in model.graph.nodes)
        return mapc.PassResult(changed=False, counters={"matmuls": count})

    counted = mapc.compile(result.model, passes="count-matmuls")
    print("MatMul nodes after the default pipeline:", counted.passes[0].counters["matmuls"])

    with tempfile.TemporaryDirectory() as folder:
        written = result.save(Path(folder) / "transformer.mapc.onnx")
        print("saved", written.name, written.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
