"""``mapc llm``: one decoder export in, a static prefill graph and a static decode graph out.

For each step (``prefill``: N new tokens, ``decode``: 1) the export is loaded, given the static
interface (:func:`~.static_io.static_step`) and compiled by :func:`mapc.compile` with every
input shape fixed and the attention mask hoisted into a host input (``mask_as_input``); the
hoisted input is then named ``attention_mask``. Both graphs are written with one shared weight
file (:func:`mapc.ir.save_sharing_weights`), the rotary tables when the host computes RoPE, and
the manifest (:mod:`.manifest`).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx_graphsurgeon as gs

from mapc.api import CompileResult, compile
from mapc.ir import Model, OutputError, UsageError, __version__, load, save_sharing_weights, standard_op
from mapc.llm.agreement import cache_ranges, measure_agreement, record_calibration
from mapc.llm.manifest import FORMAT, FORMAT_VERSION, graph_entry, write_manifest
from mapc.llm.source import load_decoder
from mapc.llm.positions import find_position_cut
from mapc.llm.reference import DynamicDecoder
from mapc.llm.roles import DecoderRoles, find_roles
from mapc.llm.samples import source_sequences, step_samples
from mapc.llm.embedding import host_embedding
from mapc.llm.lm_head import lm_head_model
from mapc.llm.rope import RopeTable
from mapc.llm.static_io import MASK_2D, static_step
from mapc.passes import MASK_INPUTS, QUANTIZED_IO
from mapc.targets import Target, get_target

RopeMode = Literal["auto", "graph", "inputs"]
EmbeddingMode = Literal["auto", "graph", "host"]
WEIGHTS_NAME = "weights.data"
STEPS = ("prefill", "decode")
#: The token a prompt shorter than a prefill chunk is left-padded with (masked, so any id works).
PAD_TOKEN = 0


@dataclass
class LLMOptions:
    """What ``mapc llm`` is asked for (the CLI flags of the same names)."""

    context: int
    prefill: int
    target: str | Target | None = None
    #: ``quantize`` options as for :func:`mapc.compile` (``{"scheme": "a16w8", "calibration": ...}``).
    quantize: dict[str, Any] | None = None
    #: ``graph``: Sin/Cos of the positions stay in the graphs; ``inputs``: the host looks the
    #: rotary tables up; ``auto``: ``inputs`` when the target does not run Sin and Cos.
    rope: RopeMode = "auto"
    #: ``graph``: the embedding lookups stay in the graphs; ``host``: the host runs them
    #: (``embed.onnx``) and the graphs take the embeddings; ``auto``: ``host`` when the target
    #: cannot gather by run-time indices.
    embedding: EmbeddingMode = "auto"
    #: ``all``: logits for every new token; ``last``: only the last one's (lm_head runs once).
    logits: Literal["all", "last"] = "all"
    #: Have Qualcomm's QNN build both graphs and put its verdict beside the plan (``qnn-htp``).
    check_with_qnn: bool = False
    #: Quantized: keep float graph I/O (boundary Q/DQ on the host) instead of integer codes.
    float_io: bool = False
    #: Quantized with integer I/O: the KV cache's width (8 or 16 bits; None: the activations').
    kv_bits: int | None = None
    #: lm_head as a graph of its own (``lm_head.onnx``): the step graphs end at the hidden states.
    lm_head_graph: bool = False
    #: Float splits: keep the KV cache in float16 (half the memory; the graphs cast it).
    kv_fp16: bool = False
    roles: Mapping[str, str] = field(default_factory=dict)
    seed: int = 0

    def validate(self) -> None:
        if self.context < 2:
            raise UsageError(f"--context {self.context}: the cache needs at least 2 positions")
        if not 1 <= self.prefill < self.context:
            raise UsageError(f"--prefill {self.prefill}: a prefill chunk takes 1 to context-1 ({self.context - 1}) tokens")
        if self.rope not in ("auto", "graph", "inputs"):
            raise UsageError(f"--rope {self.rope}: choose auto, graph or inputs")
        if self.embedding not in ("auto", "graph", "host"):
            raise UsageError(f"--embedding {self.embedding}: choose auto, graph or host")
        if self.logits not in ("all", "last"):
            raise UsageError(f"--logits {self.logits}: choose all or last")
        if self.kv_bits not in (None, 8, 16):
            raise UsageError(f"--kv-bits {self.kv_bits}: choose 8 or 16")
        if self.kv_bits is not None and (self.quantize is None or self.float_io):
            raise UsageError("--kv-bits needs --quantize and integer I/O (not --float-io)")
        if self.kv_fp16 and self.quantize is not None and not self.float_io:
            raise UsageError("--kv-fp16 is for float caches; a quantized split stores codes (see --kv-bits)")


@dataclass
class StaticLLM:
    """The outcome of :func:`split`: both compiled graphs, the manifest, and where they went."""

    graphs: dict[str, CompileResult]
    manifest: dict[str, Any]
    rope: list[RopeTable]
    #: The embedding graph the host runs (``--embedding host``), or None.
    embedding: Model | None = None
    source: Path | None = None
    roles: dict[str, str] = field(default_factory=dict)
    seed: int = 0
    #: Per graph, the names its inputs had inside the pipeline (the hoisted mask's), by final name.
    renamed: dict[str, dict[str, str]] = field(default_factory=dict)
    #: lm_head as its own graph (``lm_head_graph``), or None.
    lm_head: Model | None = None
    directory: Path | None = None

    @property
    def report(self) -> dict[str, Any]:
        """One ``mapc compile`` report per graph, under ``prefill`` and ``decode``, and the
        split's own facts (manifest, weight bytes, agreement) under ``llm``."""
        report: dict[str, Any] = {name: result.report for name, result in self.graphs.items()}
        report["llm"] = {"manifest": self.manifest, "weight_bytes": self.weight_bytes()}
        return report

    def weight_bytes(self) -> dict[str, int]:
        """Bytes of weights in the shared file, and what storing them once per graph would take."""
        separate = sum(_initializer_bytes(result.model) for result in self.graphs.values())
        for model in (self.embedding, self.lm_head):
            if model is not None:
                separate += _initializer_bytes(model)
        shared = separate
        if self.directory is not None and (self.directory / WEIGHTS_NAME).exists():
            shared = (self.directory / WEIGHTS_NAME).stat().st_size
        return {"shared": shared, "separate": separate}


def split(source: str | os.PathLike, options: LLMOptions, *, on_graph: Callable[[str], None] | None = None,
          on_pass_start: Callable[[str], None] | None = None) -> StaticLLM:
    """Compile the decoder at ``source`` into static prefill and decode graphs (see :func:`write`).

    Quantized without ``calibration``, both graphs are first compiled in float and decode seeded
    prompts; what each graph is fed becomes its calibration data (:func:`~.agreement.record_calibration`).
    A ``calibration`` folder holds ``prefill/`` and ``decode/`` sample folders.
    """
    options.validate()
    decoder = DynamicDecoder(source, dict(options.roles))
    source_run = (decoder, source_sequences(decoder, options.context, options.prefill, options.seed))
    quantize = options.quantize
    if quantize is None:
        return _compile_pair(source, options, {}, None, source_run, on_graph, on_pass_start)
    calibration = quantize.get("calibration")
    if calibration == "random":
        return _compile_pair(source, options, {name: quantize for name in STEPS}, None, source_run, on_graph, on_pass_start)
    if calibration is not None:
        folders = {name: Path(calibration) / name for name in STEPS}
        missing = [str(folder) for folder in folders.values() if not folder.is_dir()]
        if missing:
            raise UsageError(f"--calibration {calibration}: needs a prefill/ and a decode/ folder of samples ({missing[0]} is missing)")
        return _compile_pair(source, options, {name: {**quantize, "calibration": str(folders[name])} for name in STEPS},
                             _integer_io(options, folders), source_run, on_graph, on_pass_start)
    with tempfile.TemporaryDirectory(prefix="mapc-llm-") as scratch:
        float_split = _compile_pair(source, dataclasses.replace(options, quantize=None, kv_bits=None, check_with_qnn=False), {}, None,
                                    source_run, on_graph, on_pass_start)
        write(float_split, Path(scratch) / "float", measure=False)
        if on_graph is not None:
            on_graph("calibration: decoding with the float graphs")
        folders = record_calibration(Path(scratch) / "float", Path(scratch) / "calibration", float_split.renamed, options.seed)
        return _compile_pair(source, options, {name: {**quantize, "calibration": str(folders[name])} for name in STEPS},
                             _integer_io(options, folders), source_run, on_graph, on_pass_start)


def _integer_io(options: LLMOptions, folders: Mapping[str, Path]) -> dict[str, Any] | None:
    """``quantized-io`` options: every boundary as codes, each cache tensor's past input and new
    output given one range (from the calibration samples), at ``kv_bits`` when asked."""
    if options.float_io:
        return None
    ranges = cache_ranges(folders)
    return {"ranges": ranges, "bits": {name: options.kv_bits for name in ranges} if options.kv_bits else {}}


def _compile_pair(source: str | os.PathLike, options: LLMOptions, quantize: Mapping[str, dict[str, Any]],
                  integer_io: dict[str, Any] | None,
                  source_run: tuple[DynamicDecoder, list[tuple[list[int], dict[str, np.ndarray]]]], on_graph: Callable[[str], None] | None, on_pass_start: Callable[[str], None] | None) -> StaticLLM:
    target = get_target(options.target) if options.target is not None else None
    rope_inputs = options.rope == "inputs" or (options.rope == "auto" and target is not None and not _runs_trig(target))
    embedding_on_host = options.embedding == "host" or (
        options.embedding == "auto" and target is not None and not target.is_host and not target.limits.gather_dynamic_indices)
    host_tables: dict[str, tuple[str, np.ndarray]] = {}
    graphs: dict[str, CompileResult] = {}
    entries: dict[str, Any] = {}
    renamed: dict[str, dict[str, str]] = {}
    tables: list[RopeTable] = []
    mask_fill: float | None = None
    roles: DecoderRoles | None = None
    rotary = False
    head_weight: np.ndarray | None = None
    decoder, traces = source_run
    for name, new_tokens in (("prefill", options.prefill), ("decode", 1)):
        if on_graph is not None:
            on_graph(f"compiling the {name} graph")
        model = load_decoder(source)
        roles = find_roles(model, options.roles)
        if options.context > _max_positions(model, roles):
            raise UsageError(f"--context {options.context}: the model's position table holds only "
                             f"{_max_positions(model, roles)} positions")
        step = static_step(model, roles, find_position_cut(model, roles), new_tokens=new_tokens,
                           context=options.context, rope_inputs=rope_inputs, embedding_on_host=embedding_on_host,
                           last_logits=options.logits == "last", cache_dtype=np.float16 if options.kv_fp16 else None,
                           separate_lm_head=options.lm_head_graph)
        # the mask pass measures the attention scores on these before it hoists the mask
        samples = step_samples(step, decoder, traces)
        result = compile(model, target=options.target, input_shapes=step.input_shapes, quantize=quantize.get(name),
                         verify_inputs=samples,
                         quantized_io=integer_io if quantize.get(name) is not None else None,
                         check_with_qnn=options.check_with_qnn,
                         seed=options.seed, pass_options={"attention-mask": {"mask_as_input": True}},
                         on_pass_start=on_pass_start)
        hoisted, fill = _name_mask_input(result, name, new_tokens, options.context)
        codes = dict(result.facts.get(QUANTIZED_IO) or {})
        if hoisted in codes:
            codes["attention_mask"] = codes.pop(hoisted)
        renamed[name] = {"attention_mask": hoisted}
        mask_fill = fill if mask_fill is None else min(mask_fill, fill)
        _drop_unread_inputs(result.model)
        graphs[name] = result
        entries[name] = graph_entry(result.model, f"{name}.onnx", new_tokens, codes)
        tables = step.rope or tables
        rotary = step.rotary
        host_tables = step.host_tables or host_tables
        head_weight = step.lm_head
    assert roles is not None and mask_fill is not None
    embedding = load(host_embedding(host_tables, 13)) if host_tables else None
    lm_head = load(lm_head_model(head_weight, 13)) if head_weight is not None else None
    host_graphs = {}
    if embedding is not None:
        host_graphs["embedding"] = graph_entry(embedding, "embed.onnx", "tokens")
    if lm_head is not None:
        host_graphs["lm_head"] = graph_entry(lm_head, "lm_head.onnx", "tokens")
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mapc_version": __version__,
        "source": Path(source).name,
        "context": options.context,
        "prefill": options.prefill,
        "logits": options.logits,
        "vocab_size": roles.vocab_size,
        "layers": len(roles.layers),
        "kv_heads": roles.kv_heads,
        "head_dim": roles.head_dim,
        "mask_fill": mask_fill,
        "pad_token_id": PAD_TOKEN,
        "weights": WEIGHTS_NAME,
        "rope": {"mode": "inputs" if tables else ("graph" if rotary else "none"),
                 "tables": {t.input: {"file": f"{t.input}.npy", "axis": t.axis} for t in tables}},
        "target": str(target) if target is not None else None,
        "quantize": graphs["decode"].options.get("quantize"),
        "kv_bits": options.kv_bits,
        "kv_fp16": options.kv_fp16,
        "graphs": entries,
        "host_graphs": host_graphs,
    }
    return StaticLLM(graphs, manifest, tables, embedding, Path(source), dict(options.roles), options.seed, renamed, lm_head)


def write(llm: StaticLLM, directory: str | os.PathLike, *, measure: bool = True) -> Path:
    """Write both graphs, their shared weights, the rotary tables and the manifest to ``directory``;
    then (``measure``) decode with them against the source export and record the agreement in
    the manifest (:func:`~.agreement.measure_agreement`)."""
    folder = Path(directory)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot create {folder}: {error.strerror or error}") from None
    models = {folder / entry["file"]: llm.graphs[name].model for name, entry in llm.manifest["graphs"].items()}
    for name, model in (("embedding", llm.embedding), ("lm_head", llm.lm_head)):
        if model is not None:
            models[folder / llm.manifest["host_graphs"][name]["file"]] = model
    save_sharing_weights(models, WEIGHTS_NAME)
    for table in llm.rope:
        temporary = folder / f".{table.input}.{os.getpid()}.tmp.npy"
        np.save(temporary, table.table)
        os.replace(temporary, folder / f"{table.input}.npy")
    write_manifest(folder, llm.manifest)
    llm.directory = folder
    if measure and llm.source is not None:
        llm.manifest["agreement"] = measure_agreement(folder, llm.source, llm.roles, llm.seed)
        write_manifest(folder, llm.manifest)
    return folder


def _drop_unread_inputs(model: Model) -> None:
    """Token or position inputs nothing reads any more (their readers folded away) leave the interface."""
    model.graph.inputs = [t for t in model.graph.inputs if t.outputs or t.name not in ("input_ids", "position_ids")]


def _runs_trig(target: Target) -> bool:
    return target.is_host or {"Sin", "Cos"} <= set(target.ops.supported)


def _max_positions(model: Model, roles: DecoderRoles) -> int:
    """The size of a learned position table (GPT-2's wpe), or unbounded for rotary models."""
    sizes = [int(node.inputs[0].shape[0]) for node in model.graph.nodes
             if standard_op(node) == "Gather" and node.inputs[0].shape is not None and len(node.inputs[0].shape) == 2
             and int(node.inputs[0].shape[0]) != roles.vocab_size and isinstance(node.inputs[0], gs.Constant)]
    return min(sizes) if sizes else 1 << 31


def _initializer_bytes(model: Model) -> int:
    return sum(int(np.prod(t.shape)) * np.dtype(t.dtype).itemsize for t in model.graph.tensors().values()
               if isinstance(t, gs.Constant) and t.shape is not None and int(np.prod(t.shape)) * np.dtype(t.dtype).itemsize >= 1024)


def _name_mask_input(result: CompileResult, graph: str, new_tokens: int, context: int) -> tuple[str, float]:
    """Name the hoisted mask input ``attention_mask`` (one input for every layer) and return its fill."""
    hoisted = result.facts.get(MASK_INPUTS)
    names = [contract["input"] for contract in hoisted.contracts] if hoisted is not None else []
    model = result.model
    leftover = [t.name for t in model.graph.inputs if t.name == MASK_2D]
    if len(names) != 1 or leftover:
        reason = "the mask still reads the 2-D padding mask" if leftover else f"{len(names)} separate masks were found"
        raise UsageError(f"cannot give the {graph} graph one host-computed attention mask: {reason}")
    mask = next(t for t in model.graph.inputs if t.name == names[0])
    if [int(d) if isinstance(d, int) else d for d in mask.shape] != [1, 1, new_tokens, context]:
        raise UsageError(f"the {graph} graph's attention mask has shape {mask.shape}, not [1, 1, {new_tokens}, {context}]")
    hoisted_name = mask.name
    mask.name = "attention_mask"
    return hoisted_name, float(hoisted.contracts[0]["fill"])
