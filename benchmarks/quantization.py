"""mapc's quantize pass against onnxruntime's ``quantize_static``, on the same models, in one run.

Both tools get the same prepared float model, the same calibration samples and the same scheme
(QDQ, per-channel int8 weights, uint8 activations; 16-bit activations for ``a16w8``), and the
same calibration method where both have it (MinMax, Entropy, Percentile). Each quantization
runs in its own subprocess, so its wall time and peak RSS are its own. Both quantized models are
then evaluated the same way against the float model on held-out samples (never used for
calibration): the worst output's SQNR in dB, the lowest cosine similarity, top-1 agreement of
classifier-like outputs, plus the model size.

Models:
* the CNNs shipped in onnx's wheel (``onnx/backend/test/data/light``: ResNet-50, SqueezeNet,
  ShuffleNet, DenseNet-121, Inception v1/v2, AlexNet, VGG-19, ZFNet-512). Their weights are
  ``ConstantOfShape`` fills; they are replaced by seeded random weights, then normalised layer
  by layer on random images (BatchNorm statistics measured, other Conv/Gemm outputs scaled to
  unit variance: LSUV), so activations neither explode nor vanish and the outputs depend on the
  input. The opset is raised to 13 and the graph pre-processed with onnxruntime's
  ``quant_pre_process`` (BatchNorm folding) — the same file for both tools.
* the tiny transformers of ``tests/fixtures/transformers`` (BERT, GPT-2, Llama, ViT, Whisper;
  random weights, masks with the exporters' finfo.min fills), at batch 1, sequence 8; and a
  ``+peaky`` variant of each whose query projections are scaled ×8. Random initialisation
  gives near-uniform attention, which hides what a quantizer does to the attention mask (a
  scale of 1e36 on the masked scores flattens attention to uniform, which random attention
  almost is); trained models attend sharply, as the variant does.

mapc runs ``cleanup`` then ``quantize`` (not its fusion stages), so both quantizers see the same
graph. Each model is quantized by mapc with its defaults (every op an integer NPU runs is quantized:
Tanh, Erf, Div... too; Concat inputs share the output's scale), by mapc with onnxruntime's
placement (``mapc-ort-placement``: only the op types onnxruntime quantizes, Concat untied; run
where the model has such ops or a Concat: a like-for-like comparison of the quantizers
themselves), and by onnxruntime. The CNNs' final Softmax is removed: their logits are compared.

Calibration and held-out inputs are seeded random: normal images / features, random token ids,
attention masks with random right padding.

Usage::

    python benchmarks/quantization.py                     # everything, table on stdout
    python benchmarks/quantization.py --models resnet50,bert-ts-eager --methods minmax
    python benchmarks/quantization.py --json results.json --markdown results.md
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper, version_converter

ROOT = Path(__file__).resolve().parent.parent
LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
FIXTURES = ROOT / "tests" / "fixtures" / "transformers"
CNNS = ["resnet50", "squeezenet", "shufflenet", "densenet121", "inception_v1", "inception_v2", "bvlc_alexnet", "vgg19", "zfnet512"]
TRANSFORMERS = ["bert-ts-eager", "bert-dynamo-sdpa", "gpt2-ts-eager", "gpt2-dynamo-sdpa", "llama-ts-eager", "llama-dynamo-sdpa", "vit-ts-eager", "vit-dynamo-sdpa", "whisper-ts-eager", "whisper-dynamo-sdpa"]
ORT_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


# -- preparing models and data --------------------------------------------------------------------


def prepare_cnn(name: str, folder: Path, seed: int) -> Path:
    """The light CNN with real random weights, opset 13, pre-processed for quantization."""
    model = onnx.load(LIGHT / f"light_{name}.onnx")
    rng = np.random.default_rng(seed)
    readers: dict[str, list[tuple[str, int]]] = {}
    for node in model.graph.node:
        for index, tensor in enumerate(node.input):
            readers.setdefault(tensor, []).append((node.op_type, index))
    shapes = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    kept, weights = [], []
    for node in model.graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in shapes:
            shape = tuple(int(d) for d in shapes[node.input[0]])
            weights.append(numpy_helper.from_array(_weight(readers.get(node.output[0], [("?", 0)])[0], shape, rng), node.output[0]))
        else:
            kept.append(node)
    del model.graph.node[:]
    model.graph.node.extend(kept)
    model.graph.initializer.extend(weights)
    initializer_names = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializer_names]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    drop_final_softmax(model)
    model.ir_version = 7  # initializers need not be inputs from IR 4 on
    model = version_converter.convert_version(model, 13)
    model.ir_version = max(model.ir_version, 7)
    onnx.checker.check_model(model)
    normalise(model, rng)
    raw = folder / f"{name}.raw.onnx"
    onnx.save(model, raw)
    prepared = folder / f"{name}.onnx"
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(raw), str(prepared), skip_symbolic_shape=True)
    return prepared


def drop_final_softmax(model: onnx.ModelProto) -> None:
    """Make the logits the output: the SQNR of 1000 softmax probabilities of a random network
    swings with tiny logit changes between near-tied classes, and hides the quantizer. Handles a
    Softmax that is the output or that only a Reshape/Flatten/Squeeze producing it reads."""
    outputs = {o.name: o for o in model.graph.output}
    for node in list(model.graph.node):
        if node.op_type != "Softmax":
            continue
        readers = [n for n in model.graph.node if node.output[0] in n.input]
        if node.output[0] in outputs and not readers:
            output = outputs[node.output[0]]
            output.name = node.input[0]
            output.type.tensor_type.ClearField("shape")  # the logits have another shape
        elif readers and all(r.op_type in ("Reshape", "Flatten", "Squeeze") and r.output[0] in outputs for r in readers):
            for reader in readers:
                reader.input[0] = node.input[0]
        else:
            continue
        model.graph.node.remove(node)


def normalise(model: onnx.ModelProto, rng: np.random.Generator) -> None:
    """LSUV in place: in graph order, set each BatchNormalization's mean/variance to those of its
    input, and scale each Conv/Gemm not followed by a BatchNormalization to unit output variance
    (the last one, the classifier, to a standard deviation of 4: confident, not saturated,
    softmax outputs). A BatchNormalization closing a residual branch gets a small scale (0.2),
    as in trained ResNets; with unit-scale branches a random ResNet-50 is chaotic and any
    8-bit model of it loses most of its accuracy. Parameters are fed as inputs, so one
    onnxruntime session serves every step."""
    import onnxruntime as ort

    initializers = {t.name: t for t in model.graph.initializer}
    params = {name: numpy_helper.to_array(t).copy() for name, t in initializers.items() if t.data_type == onnx.TensorProto.FLOAT}
    feeding = onnx.ModelProto()
    feeding.CopyFrom(model)
    kept = [t for t in feeding.graph.initializer if t.name not in params]
    del feeding.graph.initializer[:]
    feeding.graph.initializer.extend(kept)
    feeding.graph.input.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, v.shape) for n, v in params.items())
    readers: dict[str, list[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node.op_type)
    steps = [n for n in model.graph.node if n.op_type == "BatchNormalization" or (n.op_type in ("Conv", "Gemm") and readers.get(n.output[0]) != ["BatchNormalization"])]
    watched = [n.input[0] if n.op_type == "BatchNormalization" else n.output[0] for n in steps]
    for name in watched:
        feeding.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(feeding.SerializeToString(), options, providers=["CPUExecutionProvider"])
    image = {i.name: rng.standard_normal([d if isinstance(d, int) else 1 for d in i.shape]).astype(np.float32) for i in session.get_inputs() if i.name not in params}
    for node, name in zip(steps, watched):
        value = session.run([name], {**image, **params})[0].astype(np.float64)
        axes = tuple(a for a in range(value.ndim) if a != 1)
        if node.op_type == "BatchNormalization":
            params[node.input[3]] = value.mean(axis=axes).astype(np.float32)
            params[node.input[4]] = (value.var(axis=axes) + 1e-3).astype(np.float32)
            if set(readers.get(node.output[0], [])) <= {"Add", "Sum"}:
                params[node.input[1]] = params[node.input[1]] * np.float32(0.2)  # residual branch: small, as trained
            continue
        target = 4.0 if node is steps[-1] else 1.0
        factor = np.float32(target / max(float(value.std()), 1e-6))
        for index in (1, 2):
            if len(node.input) > index and node.input[index] in params:
                params[node.input[index]] = params[node.input[index]] * factor
    for name, tensor in initializers.items():
        if name in params:
            tensor.CopyFrom(numpy_helper.from_array(params[name], name))


def _weight(reader: tuple[str, int], shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    op, index = reader
    size = int(np.prod(shape))
    if op == "BatchNormalization":
        if index == 1:
            return (1.0 + 0.2 * rng.standard_normal(shape)).astype(np.float32)
        if index == 4:
            return rng.uniform(0.5, 1.5, shape).astype(np.float32)
        return (0.2 * rng.standard_normal(shape)).astype(np.float32)
    if len(shape) >= 2:
        fan_in = size // shape[0] if op != "Gemm" else shape[1]
        return (rng.standard_normal(shape) * np.sqrt(2.0 / max(fan_in, 1))).astype(np.float32)
    return (0.05 * rng.standard_normal(shape)).astype(np.float32)


def prepare_transformer(name: str, folder: Path) -> Path:
    base, _, variant = name.partition("+")
    model = onnx.load(FIXTURES / f"{base}.onnx")
    if variant == "peaky":
        if not sharpen_attention(model, 8.0):
            raise ValueError("no attention scores MatMul with a constant query projection found")
    path = folder / f"{name}.onnx"
    onnx.save(model, path)
    return path


def sharpen_attention(model: onnx.ModelProto, factor: float) -> bool:
    """Scale the query projection of every attention (found by walking back from each Softmax
    to the scores MatMul, then from its first input to a MatMul/Gemm with a constant weight)."""
    producers = {out: node for node in model.graph.node for out in node.output}
    initializers = {t.name: t for t in model.graph.initializer}

    def walk(start: str, accept, depth: int):
        frontier = [start]
        for _ in range(depth):
            following = []
            for name in frontier:
                node = producers.get(name)
                if node is None:
                    continue
                if accept(node):
                    return node
                following.extend(node.input[:1] if node.op_type not in ("Add", "Where", "Mul", "Div") else [i for i in node.input if i not in initializers])
            frontier = following
        return None

    scaled = set()
    for softmax in (n for n in model.graph.node if n.op_type == "Softmax"):
        scores = walk(softmax.input[0], lambda n: n.op_type == "MatMul" and all(i not in initializers for i in n.input), 4)
        if scores is None:
            continue
        projection = walk(scores.input[0], lambda n: n.op_type in ("MatMul", "Gemm") and n.input[1] in initializers, 12)
        if projection is None or projection.input[1] in scaled:
            continue
        weight = initializers[projection.input[1]]
        weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * np.float32(factor), weight.name))
        scaled.add(projection.input[1])
    return bool(scaled)


def make_samples(model_path: Path, name: str, count: int, seed: int) -> list[dict[str, np.ndarray]]:
    """Seeded inputs: normal floats, token ids in [0, vocab), masks with random right padding."""
    model = onnx.load(model_path, load_external_data=False)
    template = {}
    base = name.partition("+")[0]
    if base in TRANSFORMERS:
        with np.load(FIXTURES / f"{base}.npz") as archive:
            template = {k.split(":", 1)[1]: archive[k] for k in archive.files if k.startswith("input:")}
    initializers = {t.name for t in model.graph.initializer}
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(count):
        sample = {}
        for value in model.graph.input:
            if value.name in initializers:
                continue
            dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
            if value.name in template:
                shape = (1, *template[value.name].shape[1:])
            else:
                shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in value.type.tensor_type.shape.dim)
            if value.name == "attention_mask":
                array = np.ones(shape, dtype=dtype)
                keep = rng.integers(max(shape[-1] // 2, 1), shape[-1] + 1)
                array[..., keep:] = 0
            elif value.name == "input_ids":
                array = rng.integers(0, 128, shape).astype(dtype)
            elif np.issubdtype(dtype, np.integer):
                array = np.zeros(shape, dtype=dtype)
            else:
                array = rng.standard_normal(shape).astype(dtype)
            sample[value.name] = array
        samples.append(sample)
    return samples


# -- running one tool (in a subprocess) --------------------------------------------------------------


def run_tool(tool: str, model_path: Path, output: Path, data_dir: Path, calibration: int, holdout: int, method: str, scheme: str, extra: dict) -> dict:
    started = time.perf_counter()
    if tool == "mapc":
        import mapc

        options = {"scheme": scheme, "calibration": str(data_dir), "calibration_method": method, "holdout": holdout / (calibration + holdout), **extra}
        # The quantizer alone on the same prepared graph (no fusion first), as onnxruntime gets it.
        result = mapc.compile(str(model_path), passes="cleanup", quantize=options)
        result.save(output)
        report = next(r for r in result.passes if r.name == "quantize")
        info = {"notes": [n.code for n in report.notes if n.severity != "info"], "promoted": len(report.details.get("accuracy_target", {}).get("promoted", []))}
    else:
        from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.files = sorted(data_dir.glob("*.npz"))[:calibration]

            def get_next(self):
                if not self.files:
                    return None
                with np.load(self.files.pop(0)) as archive:
                    return {key: archive[key] for key in archive.files}

        opset = next(o.version for o in onnx.load(model_path, load_external_data=False).opset_import if o.domain in ("", "ai.onnx"))
        activation = QuantType.QUInt16 if scheme == "a16w8" else QuantType.QUInt8
        quantize_static(
            str(model_path), str(output), Reader(),
            quant_format=QuantFormat.QDQ, per_channel=True, activation_type=activation, weight_type=QuantType.QInt8,
            calibrate_method=getattr(CalibrationMethod, ORT_METHODS[method]),
            extra_options={"UseQDQContribOps": scheme == "a16w8" and opset < 21},
        )
        info = {}
    seconds = time.perf_counter() - started
    size = output.stat().st_size + (Path(f"{output}.data").stat().st_size if Path(f"{output}.data").exists() else 0)
    return {"ok": True, "seconds": round(seconds, 2), "peak_rss_mb": round(peak_rss_mb(), 1), "size_bytes": size, **info}


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss it starts afresh at exec,
    so it does not inherit the benchmark parent's size)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_isolated(tool: str, model_path: Path, output: Path, data_dir: Path, args: argparse.Namespace, method: str, scheme: str, extra: dict) -> dict:
    options = {**json.loads(args.mapc_options), **extra}
    command = [
        sys.executable, __file__, "--run", tool.split("-")[0], str(model_path), str(output), str(data_dir),
        str(args.samples), str(args.holdout), method, scheme, json.dumps(options),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        error = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"ok": False, "error": error[:300]}
    return json.loads(lines[-1])


def ort_coverage_exclusions(model_path: Path) -> list[str]:
    """Op types of this model mapc quantizes and onnxruntime's quantizer does not."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    from mapc.passes.quantize.placement import QUANTIZED_INPUTS

    present = {node.op_type for node in onnx.load(model_path, load_external_data=False).graph.node}
    return sorted((set(QUANTIZED_INPUTS) - set(QLinearOpsRegistry) - set(QDQRegistry)) & present)


# -- evaluating ----------------------------------------------------------------------------------------


def evaluate(float_path: Path, quantized_path: Path, samples: list[dict[str, np.ndarray]]) -> dict:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    reference = ort.InferenceSession(str(float_path), options, providers=["CPUExecutionProvider"])
    quantized = ort.InferenceSession(str(quantized_path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in reference.get_outputs()]
    signal = dict.fromkeys(names, 0.0)
    noise = dict.fromkeys(names, 0.0)
    dot = dict.fromkeys(names, 0.0)
    power = dict.fromkeys(names, 0.0)
    agree = rows = 0
    for sample in samples:
        expected = dict(zip(names, reference.run(names, sample)))
        actual = dict(zip(names, quantized.run(names, sample)))
        for name in names:
            a, b = expected[name].astype(np.float64), actual[name].astype(np.float64)
            if expected[name].dtype.kind != "f":
                continue
            finite = np.isfinite(a)
            b = np.where(np.isfinite(b), b, 1e30)
            a, b = a[finite], b[finite]
            signal[name] += float(a @ a)
            noise[name] += float((a - b) @ (a - b))
            dot[name] += float(a @ b)
            power[name] += float(b @ b)
        first = expected[names[0]]
        squeezed = [d for d in first.shape if d != 1]
        if first.dtype.kind == "f" and squeezed and len(squeezed) <= 2 and squeezed[-1] >= 2:
            ref = first.reshape(-1, squeezed[-1]).argmax(axis=1)
            got = actual[names[0]].reshape(-1, squeezed[-1]).argmax(axis=1)
            agree += int((ref == got).sum())
            rows += ref.size
    sqnr = [10 * np.log10(signal[n] / noise[n]) if noise[n] > 0 else 200.0 for n in names if signal[n] > 0]
    cosine = [dot[n] / np.sqrt(signal[n] * power[n]) if signal[n] * power[n] > 0 else 0.0 for n in names if signal[n] > 0]
    result = {"sqnr_db": round(float(min(sqnr)), 2) if sqnr else None, "cosine": round(float(min(cosine)), 5) if cosine else None}
    if rows:
        result["top1"] = round(agree / rows, 4)
    return result


# -- the run ----------------------------------------------------------------------------------------------


def benchmark(args: argparse.Namespace) -> list[dict]:
    models = args.models.split(",") if args.models else CNNS + [v for t in TRANSFORMERS for v in (t, f"{t}+peaky")]
    methods = args.methods.split(",")
    rows = []
    with tempfile.TemporaryDirectory(prefix="mapc-quant-bench-") as temporary:
        folder = Path(temporary)
        for name in models:
            try:
                model_path = prepare_cnn(name, folder, args.seed) if name in CNNS else prepare_transformer(name, folder)
                coverage = ort_coverage_exclusions(model_path)
                concat = any(n.op_type == "Concat" for n in onnx.load(model_path, load_external_data=False).graph.node)
            except Exception as error:  # a model the preparation cannot handle is reported, not fatal
                rows.append({"model": name, "error": f"preparation failed: {error}"})
                print(f"{name}: preparation failed: {error}", flush=True)
                continue
            samples = make_samples(model_path, name, args.samples + args.holdout, args.seed)
            data_dir = folder / f"{name}-data"
            data_dir.mkdir(exist_ok=True)
            for index, sample in enumerate(samples):
                np.savez(data_dir / f"sample_{index:04d}.npz", **sample)
            holdout = samples[args.samples:]
            schemes = ["a8w8"] + (["a16w8"] if name not in CNNS and args.a16w8 else [])
            tools = ["mapc"] + (["mapc-ort-placement"] if coverage or concat else []) + ["ort"]
            for scheme in schemes:
                for method in methods:
                    row = {"model": name, "scheme": scheme, "method": method}
                    for tool in tools:
                        output = folder / f"{name}-{scheme}-{method}-{tool}.onnx"
                        extra = {"exclude_op_types": coverage, "tie_concat": False} if tool == "mapc-ort-placement" else {}
                        outcome = run_isolated(tool, model_path, output, data_dir, args, method, scheme, extra)
                        if outcome.get("ok"):
                            outcome.update(evaluate(model_path, output, holdout))
                        row[tool] = outcome
                    rows.append(row)
                    print(_line(row), flush=True)
    return rows


def _line(row: dict) -> str:
    def cell(result: dict) -> str:
        if not result.get("ok"):
            return f"ABORT ({result.get('error', '')[:60]})"
        top1 = f" top1 {result['top1']:.2f}" if "top1" in result else ""
        return f"{result['sqnr_db']:6.2f} dB cos {result['cosine']:.4f}{top1} {result['seconds']:6.1f}s {result['peak_rss_mb']:6.0f}MB {result['size_bytes'] / 1e6:6.2f}MB"
    tools = [key for key in row if key not in ("model", "scheme", "method")]
    return f"{row['model']:26s} {row['scheme']:6s} {row['method']:10s} " + " | ".join(f"{tool} {cell(row[tool])}" for tool in tools)


def markdown(rows: list[dict]) -> str:
    """Two tables: accuracy (SQNR, cosine, top-1) and cost (time, peak RSS, size)."""
    def get(result: dict | None, key: str, fmt: str) -> str:
        if result is None:
            return ""
        if not result.get("ok"):
            return "abort" if key == "sqnr_db" else "—"
        value = result.get(key)
        return "—" if value is None else fmt.format(value)

    accuracy = [
        "| model | scheme | method | mapc SQNR dB | mapc, ort placement | ort SQNR dB | mapc cosine | ort cosine | mapc top-1 | ort top-1 |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    cost = [
        "| model | scheme | method | mapc s | ort s | mapc peak MB | ort peak MB | mapc size MB | ort size MB |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if "error" in row:
            accuracy.append(f"| {row['model']} | | | {row['error']} | | | | | | |")
            continue
        m, c, o = row["mapc"], row.get("mapc-ort-placement"), row["ort"]
        head = f"| {row['model']} | {row['scheme']} | {row['method']} |"
        accuracy.append(
            f"{head} {get(m, 'sqnr_db', '{:.2f}')} | {get(c, 'sqnr_db', '{:.2f}')} | {get(o, 'sqnr_db', '{:.2f}')} | "
            f"{get(m, 'cosine', '{:.4f}')} | {get(o, 'cosine', '{:.4f}')} | {get(m, 'top1', '{:.2f}')} | {get(o, 'top1', '{:.2f}')} |"
        )
        cost.append(
            f"{head} {get(m, 'seconds', '{:.1f}')} | {get(o, 'seconds', '{:.1f}')} | {get(m, 'peak_rss_mb', '{:.0f}')} | {get(o, 'peak_rss_mb', '{:.0f}')} | "
            f"{m.get('size_bytes', 0) / 1e6:.2f} | {o.get('size_bytes', 0) / 1e6:.2f} |"
        )
    return "\n".join(accuracy) + "\n\n" + "\n".join(cost) + "\n"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--run":
        tool, model, output, data, calibration, holdout, method, scheme, extra = sys.argv[2:11]
        import onnxruntime

        onnxruntime.set_default_logger_severity(3)
        try:
            print(json.dumps(run_tool(tool, Path(model), Path(output), Path(data), int(calibration), int(holdout), method, scheme, json.loads(extra))))
        except Exception as error:
            print(f"{type(error).__name__}: {error}".splitlines()[0], file=sys.stderr)
            sys.exit(1)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help=f"comma-separated (default: all of {', '.join(CNNS + TRANSFORMERS)})")
    parser.add_argument("--methods", default="minmax,entropy,percentile", help="calibration methods to compare (default all three)")
    parser.add_argument("--samples", type=int, default=16, help="calibration samples (default 16)")
    parser.add_argument("--holdout", type=int, default=8, help="held-out evaluation samples (default 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-a16w8", dest="a16w8", action="store_false", help="skip the a16w8 runs on transformers")
    parser.add_argument("--mapc-options", default="{}", help="extra quantize options for mapc, as JSON")
    parser.add_argument("--json", type=Path, help="write the results as JSON")
    parser.add_argument("--markdown", type=Path, help="write the results as a markdown table")
    args = parser.parse_args()
    rows = benchmark(args)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    if args.markdown:
        args.markdown.write_text(markdown(rows))


if __name__ == "__main__":
    main()
