"""mapc ``--target qnn-htp`` against onnxruntime's QNN recipe, judged by QNN itself, in one run.

Both tools get the same fp32 model, the same calibration samples and the same scheme (a8w8:
uint8 activations; a16w8: uint16 activations; 8-bit weights). Then Qualcomm's HTP compiler
(onnxruntime-qnn's QNN EP, HTP v73 emulated, the target's options: soc_model 43, fp16 for float
islands) builds each quantized model, runs the held-out samples, and compiles an EPContext model:

* **mapc**: ``mapc.compile(model, target="qnn-htp", input_shapes=..., quantize={scheme,
  calibration}, check_with_qnn=True)``; its plan's prediction is compared with QNN's verdict.
* **ort recipe**: input shapes fixed with ``onnxruntime.tools.onnx_model_utils.make_input_shape_fixed``,
  ``metadata_props`` dropped (``qnn_preprocess_model`` raises ``TypeError`` on any), then ``qnn_preprocess_model``, ``get_qnn_qdq_config`` (per-channel weights) and ``quantize``, as
  onnxruntime's QNN documentation describes.

Per model and tool: whether QNN built it (or aborted), nodes QNN did not put on HTP apart from the
graph-boundary Q/DQ (and which ops), worst-output SQNR on the emulator against the float model
on held-out samples, the EPContext compile time and size, and for mapc how many nodes its plan
predicted as QNN placed them. Models: the examples, onnx's light CNNs (random weights, LSUV
normalised, as in ``benchmarks/quantization.py``), the transformer fixtures, and any exported
model given as ``NAME=PATH`` (a real-size export: ``benchmarks/export_real_size.py`` writes a
2-layer Llama-class model and BERT-base with either torch exporter). A model given by path gets
its symbolic dims from ``--dim`` and samples that look like real ones: token ids uniform over
the vocabulary of the embedding table they index, masks (inputs named ``*mask*``) of ones with
random right padding, normal floats.

Scheme ``fp16`` quantizes nothing: mapc compiles the fp32 model for ``qnn-htp`` without
``--quantize`` and the recipe's side is the model with its input shapes fixed; QNN runs both in
its fp16 mode, and the SQNR is against the fp32 model on the CPU.

Usage::

    python benchmarks/qnn.py                                   # everything, table on stdout
    python benchmarks/qnn.py --models cnn,resnet50,bert-ts-eager --schemes a8w8
    python benchmarks/qnn.py --models llama2l=/tmp/llama2l-ts-eager.onnx --dim batch=1 --dim seq=128
    python benchmarks/qnn.py --json results.json --markdown results.md
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quantization import CNNS, TRANSFORMERS, make_samples, prepare_cnn, prepare_transformer  # noqa: E402

import mapc  # noqa: E402
from mapc.targets import get_target  # noqa: E402
from mapc.targets.qnn import ask_qnn, qnn_options  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = {"cnn": ROOT / "examples" / "cnn.onnx", "transformer": ROOT / "examples" / "transformer.onnx"}
DEFAULT_MODELS = ["transformer", "cnn", *CNNS, *TRANSFORMERS]
#: The scheme that quantizes nothing: the fp32 model (mapc's compile of it, or the model as it
#: is with its input shapes fixed) runs in QNN's fp16 mode.
FLOAT = "fp16"


def worst_sqnr(float_path: Path, outputs: list[dict[str, np.ndarray]] | None, samples: list[dict[str, np.ndarray]]) -> float | None:
    if not outputs:
        return None
    session = ort.InferenceSession(str(float_path), providers=["CPUExecutionProvider"])
    signal: Counter[str] = Counter()
    noise: Counter[str] = Counter()
    for sample, actual in zip(samples, outputs):
        feeds = {i.name: sample[i.name] for i in session.get_inputs()}
        for meta, expected in zip(session.get_outputs(), session.run(None, feeds)):
            if meta.name not in actual or np.asarray(expected).dtype.kind != "f":
                continue
            reference = np.asarray(expected, np.float64)
            difference = np.asarray(actual[meta.name], np.float64).reshape(reference.shape) - reference
            signal[meta.name] += float((reference**2).sum())
            noise[meta.name] += float((difference**2).sum())
    values = [10 * np.log10(signal[k] / noise[k]) if noise[k] > 0 else 99.0 for k in signal]
    return round(min(values), 2) if values else None


def qnn_outcome(model_path: Path, float_path: Path, holdout: list[dict[str, np.ndarray]], folder: Path, tag: str) -> dict:
    """QNN builds the model, runs the held-out samples and compiles its EPContext model."""
    arch, options = qnn_options(get_target("qnn-htp"))
    check = ask_qnn(onnx.load(str(model_path)), arch=arch, provider_options=options, samples=holdout)
    not_on_htp = Counter(v.op for v in check.verdicts if v.status not in ("htp", "boundary"))
    outcome = {
        "built": check.built,
        "aborted": check.aborted,
        "error": check.error[:160],
        "nodes": len(check.verdicts),
        "not_on_htp": sum(not_on_htp.values()),
        "not_on_htp_ops": dict(not_on_htp.most_common(4)),
        "sqnr_htp_db": worst_sqnr(float_path, check.outputs, holdout),
    }
    if check.built:
        context = folder / f"{tag}_ctx.onnx"
        started = time.perf_counter()
        compiled = ask_qnn(onnx.load(str(model_path)), arch=arch, provider_options=options, context_model=context)
        outcome["epcontext_s"] = round(time.perf_counter() - started, 2) if compiled.built else None
        outcome["epcontext_bytes"] = context.stat().st_size if context.exists() else None
    return outcome


def fixed_shapes(holdout: list[dict[str, np.ndarray]]) -> dict[str, list[int]]:
    return {name: list(value.shape) for name, value in holdout[0].items()}


def run_mapc(model_path: Path, data_dir: Path, scheme: str, shapes: dict[str, list[int]], holdout_fraction: float, output: Path) -> dict:
    started = time.perf_counter()
    quantize = None if scheme == FLOAT else {"scheme": scheme, "calibration": str(data_dir), "holdout": holdout_fraction}
    result = mapc.compile(str(model_path), target="qnn-htp", input_shapes=shapes, quantize=quantize, check_with_qnn=True)
    seconds = time.perf_counter() - started
    result.save(output)
    agreement = result.qnn
    quantized = next((r for r in result.passes if r.name == "quantize"), None)
    cpu = [o.get("sqnr_db") for o in quantized.details["accuracy"]["outputs"] if o.get("sqnr_db") is not None] if quantized else []
    return {
        "compile_s": round(seconds, 2),
        "predicted": f"{agreement.agreeing}/{len(agreement.compared)}",
        "overclaims": len(agreement.overclaims),
        "sqnr_cpu_db": round(min(cpu), 2) if cpu else None,
    }


def run_ort_recipe(model_path: Path, data_dir: Path, scheme: str, shapes: dict[str, list[int]], calibration: int, folder: Path, output: Path) -> dict:
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize
    from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config, qnn_preprocess_model
    from onnxruntime.tools.onnx_model_utils import make_input_shape_fixed

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.files = sorted(data_dir.glob("*.npz"))[:calibration]

        def get_next(self):
            if not self.files:
                return None
            with np.load(self.files.pop(0)) as archive:
                return {key: archive[key] for key in archive.files}

    started = time.perf_counter()
    model = onnx.load(str(model_path))
    for name, shape in shapes.items():
        make_input_shape_fixed(model.graph, name, shape)
    if scheme == FLOAT:  # no recipe step: the fp32 model as it is, in QNN's fp16 mode
        onnx.save(model, str(output))
        return {"compile_s": round(time.perf_counter() - started, 2)}
    del model.metadata_props[:]  # qnn_preprocess_model raises TypeError on any metadata_props (the workaround)
    fixed = folder / f"{output.stem}.fixed.onnx"
    onnx.save(model, str(fixed))
    preprocessed = folder / f"{output.stem}.pre.onnx"
    source = preprocessed if qnn_preprocess_model(str(fixed), str(preprocessed)) else fixed
    activation = QuantType.QUInt16 if scheme == "a16w8" else QuantType.QUInt8
    config = get_qnn_qdq_config(str(source), Reader(), activation_type=activation, weight_type=QuantType.QUInt8, per_channel=True)
    quantize(str(source), str(output), config)
    return {"compile_s": round(time.perf_counter() - started, 2)}


def prepare(name: str, folder: Path, seed: int) -> Path:
    if name in EXAMPLES:
        return EXAMPLES[name]
    return prepare_cnn(name, folder, seed) if name in CNNS else prepare_transformer(name, folder)


def given_path(spec: str) -> tuple[str, Path] | None:
    """``NAME=PATH`` (a model given by path) as (name, path); None for a built-in model name."""
    name, separator, path = spec.partition("=")
    return (name, Path(path)) if separator else None


def vocabulary(model: onnx.ModelProto, input_name: str) -> int | None:
    """Rows of the constant table a Gather indexes with ``input_name`` (the embedding), if any."""
    tables = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Gather" and len(node.input) > 1 and node.input[1] == input_name and node.input[0] in tables:
            return int(tables[node.input[0]].dims[0])
    return None


def path_samples(model_path: Path, count: int, seed: int, dims: dict[str, int]) -> list[dict[str, np.ndarray]]:
    """Seeded samples for a model given by path: token ids over the vocabulary of the table they
    index, ``*mask*`` inputs all ones but for random right padding (at least half kept), normal
    floats; symbolic dims from ``dims`` (a missing one is an error naming it)."""
    model = onnx.load(str(model_path), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    rng = np.random.default_rng(seed)
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        shape = []
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_value"):
                shape.append(dim.dim_value)
            elif dim.dim_param in dims:
                shape.append(dims[dim.dim_param])
            else:
                raise ValueError(f"input {value.name}: give --dim {dim.dim_param or '?'}=N")
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        specs.append((value.name, tuple(shape), dtype, vocabulary(model, value.name)))
    samples = []
    for _ in range(count):
        sample = {}
        for name, shape, dtype, vocab in specs:
            if "mask" in name.lower():
                array = np.ones(shape, dtype=dtype)
                array[..., rng.integers(max(shape[-1] // 2, 1), shape[-1] + 1):] = 0
            elif vocab is not None:
                array = rng.integers(0, vocab, shape).astype(dtype)
            elif np.issubdtype(dtype, np.integer):
                array = np.zeros(shape, dtype=dtype)
            else:
                array = rng.standard_normal(shape).astype(dtype)
            sample[name] = array
        samples.append(sample)
    return samples


def benchmark(args: argparse.Namespace) -> list[dict]:
    models = args.models.split(",") if args.models else DEFAULT_MODELS
    rows = []
    with tempfile.TemporaryDirectory(prefix="mapc-qnn-bench-") as temporary:
        folder = Path(temporary)
        dims = dict((key, int(value)) for key, _, value in (d.partition("=") for d in args.dim))
        for spec in models:
            given = given_path(spec)
            name = given[0] if given else spec
            try:
                model_path = given[1] if given else prepare(name, folder, args.seed)
                if given:
                    samples = path_samples(model_path, args.samples + args.holdout, args.seed, dims)
                else:
                    samples = make_samples(model_path, name, args.samples + args.holdout, args.seed)
            except Exception as error:  # a model the preparation cannot handle is reported, not fatal
                rows.append({"model": name, "error": f"preparation failed: {error}"})
                continue
            if name == "transformer":  # the example's vocabulary has 64 tokens
                for sample in samples:
                    sample["input_ids"] = sample["input_ids"] % 64
            data_dir = folder / f"{name}-data"
            data_dir.mkdir(exist_ok=True)
            for index, sample in enumerate(samples):
                np.savez(data_dir / f"sample_{index:04d}.npz", **sample)
            holdout, shapes = samples[args.samples:], fixed_shapes(samples)
            for scheme in args.schemes.split(","):
                row: dict = {"model": name, "scheme": scheme}
                for tool in ("mapc", "ort"):
                    output = folder / f"{name}-{scheme}-{tool}.onnx"
                    try:
                        if tool == "mapc":
                            outcome = run_mapc(model_path, data_dir, scheme, shapes, args.holdout / (args.samples + args.holdout), output)
                        else:
                            outcome = run_ort_recipe(model_path, data_dir, scheme, shapes, args.samples, folder, output)
                        outcome.update(qnn_outcome(output, model_path, holdout, folder, f"{name}-{scheme}-{tool}"))
                    except Exception as error:
                        outcome = {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:160] if str(error) else ''}"}
                        if args.debug:
                            traceback.print_exc()
                    row[tool] = outcome
                rows.append(row)
                print(_line(row), flush=True)
    return rows


def _cell(outcome: dict) -> str:
    if "error" in outcome and not outcome.get("nodes"):
        return f"ERROR {outcome['error'][:60]}"
    state = "built" if outcome["built"] else ("ABORT" if outcome["aborted"] else "FAILED")
    sqnr = "-" if outcome.get("sqnr_htp_db") is None else f"{outcome['sqnr_htp_db']:.1f} dB"
    off = f"{outcome['not_on_htp']} off HTP {outcome['not_on_htp_ops']}" if outcome["not_on_htp"] else "all on HTP"
    return f"{state}, {off}, {sqnr}"


def _line(row: dict) -> str:
    if "error" in row:
        return f"{row['model']}: {row['error']}"
    mapc_row = row["mapc"]
    predicted = f" predicted {mapc_row['predicted']}" if "predicted" in mapc_row else ""
    return f"{row['model']:<22} {row['scheme']:<6} mapc: {_cell(mapc_row)}{predicted} | ort: {_cell(row['ort'])}"


def markdown(rows: list[dict]) -> str:
    lines = [
        "| model | scheme | mapc: QNN | off HTP | SQNR on HTP | SQNR CPU QDQ | mapc predicted | EPContext s / KB | ort recipe: QNN | off HTP | SQNR on HTP |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['model']} | | {row['error']} | | | | | | | | |")
            continue
        cells = [row["model"], row["scheme"]]
        for tool in ("mapc", "ort"):
            outcome = row[tool]
            if "error" in outcome and not outcome.get("nodes"):
                cells += [f"error: {outcome['error'][:50]}", "", ""] + (["", "", ""] if tool == "mapc" else [])
                continue
            state = "built" if outcome["built"] else ("**abort**" if outcome["aborted"] else f"**failed**: {outcome['error'][:50]}")
            off = str(outcome["not_on_htp"]) + (f" ({', '.join(f'{op} {n}' for op, n in outcome['not_on_htp_ops'].items())})" if outcome["not_on_htp"] else "")
            sqnr = "-" if outcome.get("sqnr_htp_db") is None else f"{outcome['sqnr_htp_db']:.1f}"
            cells += [state, off, sqnr]
            if tool == "mapc":
                size = outcome.get("epcontext_bytes")
                cpu = "-" if outcome.get("sqnr_cpu_db") is None else f"{outcome['sqnr_cpu_db']:.1f}"
                cells += [cpu, outcome.get("predicted", "-"), f"{outcome.get('epcontext_s', '-')} / {size // 1024 if size else '-'}"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ort.set_default_logger_severity(3)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help=f"comma-separated names or NAME=PATH (default: {','.join(DEFAULT_MODELS)})")
    parser.add_argument("--dim", action="append", default=[], metavar="NAME=VALUE", help="a symbolic dim of the models given by path")
    parser.add_argument("--schemes", default="a8w8,a16w8")
    parser.add_argument("--samples", type=int, default=16, help="calibration samples")
    parser.add_argument("--holdout", type=int, default=4, help="held-out samples run on the emulator")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args()
    rows = benchmark(args)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(markdown(rows))


if __name__ == "__main__":
    main()
