"""``mapc llm``: split a decoder export into static prefill and decode graphs, or decode with a split.

    mapc llm MODEL --context C --prefill N [-o DIR] [--target T] [--quantize [SCHEME]] ...
    mapc llm generate DIR --prompt-ids 1,2,3 [-n 20]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from mapc.ir import EXIT_OK, CheckFailed, OutputError, UsageError
from mapc.llm import LLMOptions, generate, split, write
from mapc.llm.roles import NAMEABLE_ROLES
from mapc.progress import PassProgress
from mapc.report import write_json
from mapc.report_qnn import qnn_headline

USAGE = ("mapc llm MODEL --context C --prefill N [-o DIR] [--target T] [--quantize [SCHEME]] [options]\n"
         "       mapc llm generate DIR --prompt-ids 1,2,3 [-n 20]")


def add_llm_command(commands: Any) -> None:
    parser = commands.add_parser("llm", usage=USAGE, help="split a KV-cache decoder into static prefill and decode graphs; "
                                 "'mapc llm generate DIR' decodes with a split")
    parser.add_argument("model", help="decoder export with KV-cache inputs and outputs (or 'generate')")
    parser.add_argument("directory", nargs="?", type=Path, help=argparse.SUPPRESS)
    split_flags = parser.add_argument_group("split")
    split_flags.add_argument("--context", type=int, help="positions in the static KV cache (prompt and generated tokens)")
    split_flags.add_argument("--prefill", type=int, help="tokens one prefill step takes (longer prompts run in chunks)")
    split_flags.add_argument("-o", "--output", type=Path, help="output folder (default: <stem>.llm beside the model)")
    split_flags.add_argument("--target", help="device to compile both graphs for (name or TOML file, see `mapc targets`)")
    split_flags.add_argument("--quantize", nargs="?", const="target-default", metavar="SCHEME",
                             help="quantize both graphs (a8w8, a16w8, ...; default: the target's); calibrated on "
                             "greedy decoding through the float split unless --calibration is given")
    split_flags.add_argument("--check-with-qnn", action="store_true",
                             help="have Qualcomm's QNN build both graphs (qnn-htp) and compare its placement with mapc's; "
                             "exit 1 if it refuses a node mapc placed on HTP")
    split_flags.add_argument("--float-io", action="store_true",
                             help="quantized: keep float graph inputs and outputs (default: integer codes, the KV "
                             "cache's quantizers tied so the host copies bytes)")
    split_flags.add_argument("--kv-bits", type=int, choices=(8, 16),
                             help="quantized: store the KV cache in 8 or 16 bits (default: the activations' width)")
    split_flags.add_argument("--kv-fp16", action="store_true",
                             help="float splits: keep the KV cache in float16 (half the memory; the graphs cast it)")
    split_flags.add_argument("--calibration", metavar="DIR|random", help="calibration samples (a folder with prefill/ and "
                             "decode/ sub-folders of .npz samples keyed by the graphs' inputs, or 'random')")
    split_flags.add_argument("--rope", choices=("auto", "graph", "inputs"), default="auto",
                             help="rotary Sin/Cos in the graphs, or tables the host looks up (auto: inputs when the target lacks Sin/Cos)")
    split_flags.add_argument("--embedding", choices=("auto", "graph", "host"), default="auto",
                             help="embedding lookups in the graphs or on the host (auto: host when the target cannot gather by run-time indices)")
    split_flags.add_argument("--logits", choices=("all", "last"), default="all",
                             help="logits for every new token, or only the last one's (lm_head runs once per step)")
    split_flags.add_argument("--lm-head-graph", action="store_true",
                             help="lm_head as a graph of its own (lm_head.onnx): the step graphs end at the hidden states")
    split_flags.add_argument("--role", action="append", default=[], metavar="ROLE=NAME",
                             help=f"name the tensor playing a role when mapc cannot tell ({', '.join(NAMEABLE_ROLES)})")
    split_flags.add_argument("--report", type=Path, metavar="FILE.json", help="write both graphs' compile reports (keys prefill and decode)")
    split_flags.add_argument("--seed", type=int, default=0, help="seed for calibration prompts and verification inputs")
    split_flags.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    generate_flags = parser.add_argument_group("generate")
    generate_flags.add_argument("--prompt-ids", metavar="1,2,3", help="prompt token ids, comma-separated")
    generate_flags.add_argument("-n", "--max-new-tokens", type=int, default=20, help="tokens to generate (default 20)")
    parser.set_defaults(handler=run_llm)


def run_llm(args: argparse.Namespace) -> int:
    if args.model == "generate":
        return _run_generate(args)
    if args.directory is not None:
        raise UsageError(f"mapc llm takes one model; {args.directory} is extra (to decode with a split: mapc llm generate DIR)")
    if args.context is None or args.prefill is None:
        raise UsageError("mapc llm needs --context C and --prefill N")
    if args.report is not None and args.report.suffix.lower() != ".json":
        raise UsageError(f"--report {args.report}: the file name must end in .json")
    model = Path(args.model)
    if not model.is_file():
        raise UsageError(f"{model}: no such file")
    output = args.output or model.with_name(f"{model.name.removesuffix('.onnx')}.llm")
    if output.exists() and not output.is_dir():
        raise OutputError(f"output {output} exists and is not a folder")
    options = LLMOptions(context=args.context, prefill=args.prefill, target=args.target, rope=args.rope,
                         embedding=args.embedding, logits=args.logits, float_io=args.float_io, kv_fp16=args.kv_fp16, lm_head_graph=args.lm_head_graph,
                         check_with_qnn=args.check_with_qnn, kv_bits=args.kv_bits, roles=_roles(args.role), seed=args.seed,
                         quantize=_quantize(args.quantize, args.calibration))
    console = Console(quiet=args.quiet)
    with PassProgress(enabled=not args.quiet) as progress:
        llm = split(model, options, on_graph=lambda name: progress.stage(f"compiling the {name} graph"),
                    on_pass_start=progress.pass_started)
        progress.stage("saving")
        folder = write(llm, output)
        if args.report is not None:
            write_json(args.report, llm.report)
    _print_summary(llm, folder, console)
    failed = [(name, result.qnn) for name, result in llm.graphs.items() if result.qnn is not None and not result.qnn.ok]
    for name, result in llm.graphs.items():
        if result.qnn is not None:
            console.print(f"{name}: {qnn_headline(result.qnn.as_dict())}", markup=False, highlight=False)
    if failed:
        name, agreement = failed[0]
        reason = agreement.check.error if not agreement.check.built else \
            f"it refused {len(agreement.overclaims)} node(s) mapc placed on HTP, first {agreement.overclaims[0].name!r}"
        raise CheckFailed(f"QNN disagrees on the {name} graph: {reason}")
    return EXIT_OK


def _roles(specs: list[str]) -> dict[str, str]:
    roles = {}
    for spec in specs:
        role, equals, name = spec.partition("=")
        if not equals or not role or not name:
            raise UsageError(f"--role {spec!r}: expected ROLE=NAME (e.g. attention_mask=mask)")
        roles[role] = name
    return roles


def _quantize(scheme: str | None, calibration: str | None) -> dict[str, Any] | None:
    if scheme is None:
        if calibration is not None:
            raise UsageError("--calibration needs --quantize")
        return None
    options: dict[str, Any] = {} if scheme == "target-default" else {"scheme": scheme}
    if calibration is not None:
        options["calibration"] = calibration
    return options


def _print_summary(llm: Any, folder: Path, console: Console) -> None:
    table = Table(title=f"static LLM in {folder} (context {llm.manifest['context']})", title_justify="left")
    for column, justify in (("graph", "left"), ("new tokens", "right"), ("nodes", "right"), ("on target", "right"),
                            ("partitions", "right"), ("CPU nodes", "left")):
        table.add_column(column, justify=justify)
    for name, result in llm.graphs.items():
        report = result.report
        coverage = report.get("coverage")
        on_target = f"{coverage['nodes_percent']:.1f}%" if coverage else "-"
        fallback = ", ".join(f"{row['code']} {row['nodes']}" for row in report.get("fallback_by_reason", [])) or "-"
        table.add_row(name, str(llm.manifest["graphs"][name]["new_tokens"]),
                      f"{report['nodes_before']} → {coverage['nodes_total'] if coverage else report['nodes_after']}", on_target,
                      str(len(report.get("partitions", []))) if coverage else "-", fallback)
    console.print(table)
    sizes = llm.weight_bytes()
    console.print(f"weights: {sizes['shared']:,} bytes in {llm.manifest['weights']}, shared by both graphs "
                  f"({sizes['separate']:,} bytes if stored per graph)", markup=False)
    host = [f"{name} ({entry['file']})" for name, entry in llm.manifest["host_graphs"].items()]
    if llm.manifest["rope"]["mode"] == "inputs":
        host.append("rotary tables (" + ", ".join(spec["file"] for spec in llm.manifest["rope"]["tables"].values()) + ")")
    if host:
        console.print("on the host: " + ", ".join(host), markup=False)
    agreement = llm.manifest.get("agreement")
    if agreement:
        console.print(f"greedy tokens equal to the source model's: {agreement['tokens_equal']}/{agreement['tokens']}"
                      + (f", logits SQNR {agreement['logits_sqnr_db']:.1f} dB" if agreement.get("logits_sqnr_db") is not None else ""),
                      markup=False)
    console.print(f"run it: mapc llm generate {folder} --prompt-ids 1,2,3 -n 20", markup=False)


def _run_generate(args: argparse.Namespace) -> int:
    if args.directory is None:
        raise UsageError("mapc llm generate needs the folder 'mapc llm' wrote")
    if args.prompt_ids is None:
        raise UsageError("mapc llm generate needs --prompt-ids 1,2,3")
    try:
        prompt = [int(token) for token in args.prompt_ids.split(",") if token.strip()]
    except ValueError:
        raise UsageError(f"--prompt-ids {args.prompt_ids!r}: expected whole numbers separated by commas") from None
    if args.max_new_tokens < 1:
        raise UsageError("-n must be at least 1")
    tokens = generate(args.directory, prompt, args.max_new_tokens)
    print(",".join(str(token) for token in tokens))
    return EXIT_OK
