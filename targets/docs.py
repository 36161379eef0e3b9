"""A target as Markdown: its record, performance model, op set and every rule's text.

``mapc targets --show NAME`` prints this; ``python -m mapc.targets.docs docs/targets`` writes
``docs/targets/<name>.md`` for every built-in target (a test checks the committed files are
current). The rule text is the constraint functions' docstrings, so it cannot drift from the checks.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mapc.targets.builtin import BUILTIN_TARGETS, DEFAULT_TARGET
from mapc.targets.constraints import constraints_for
from mapc.targets.spec import Performance, Target, render_value


def target_markdown(target: Target) -> str:
    """The whole description of ``target`` as a Markdown page."""
    lines = [f"# Target `{target.name}`", ""]
    if target.name == DEFAULT_TARGET:
        lines += ["The default target of `mapc compile`.", ""]
    lines += [target.description, ""]
    lines += [
        "Generated from the target record and its rules by `python -m mapc.targets.docs docs/targets`;",
        f"`mapc targets --show {target}` prints the same. Origin: {target.origin}.",
        "",
    ]
    if target.notes:
        lines += ["## What it models", "", target.notes, ""]
    if target.sources:
        lines += ["Sources:", ""] + [f"- {source}" for source in target.sources] + [""]
    lines += ["## Limits", "", "| setting | value |", "|---|---|"]
    lines += [f"| `{key}` | {value} |" for key, value in _settings(target)]
    lines += [""]
    lines += _performance_section("Performance model", target.performance, accelerator=not target.is_host)
    if target.host is not None:
        lines += _performance_section("Host CPU (fallback and all-CPU baseline)", target.host, accelerator=False)
    if target.ops.supported:
        lines += ["## Operators", "", ", ".join(f"`{op}`" for op in sorted(target.ops.supported)), ""]
    lines += ["## Rules", "", "A node runs on the target when an allow rule accepts it and no veto rejects it.", ""]
    for rule in constraints_for(target):
        scope = "every op" if rule.ops is None else ", ".join(sorted(rule.ops))
        lines += [f"### `{rule.code}` ({rule.kind}; {scope})", "", rule.text(target), ""]
    return "\n".join(lines).rstrip() + "\n"


def _settings(target: Target) -> list[tuple[str, str]]:
    rows = [("kind", target.kind), ("domain", f"`{target.domain}`")]
    for section in ("tensors", "conv", "pool", "limits", "quantization"):
        record = getattr(target, section)
        for name, value in vars(record).items():
            if value is not None and value not in (frozenset(), ()) and not (section == "tensors" and name == "dtypes" and not value):
                rows.append((f"{section}.{name}", render_value(value)))
    if target.ops.dtypes:
        for op, dtypes in sorted(target.ops.dtypes.items()):
            rows.append((f"ops.dtypes.{op}", render_value(dtypes)))
    if target.ops.fused_patterns:
        rows.append(("ops.fused_patterns", "; ".join(" -> ".join(p) for p in target.ops.fused_patterns)))
    rows.append(("ops.control_flow", render_value(target.ops.control_flow)))
    # what mapc compile adds for the target: the opset it upgrades to, passes before and after quantization
    if target.min_opset is not None:
        rows.append(("min_opset", str(target.min_opset)))
    for name in ("prepare", "finish"):
        if getattr(target, name):
            rows.append((name, ", ".join(f"`{step}`" for step in getattr(target, name))))
    return rows


def _performance_section(title: str, performance: Performance, *, accelerator: bool) -> list[str]:
    lines = [f"## {title}", "", "| figure | value |", "|---|---|"]
    lines.append(f"| clock | {render_value(performance.clock_mhz)} MHz |")
    for dtype, rate in sorted(performance.macs_per_cycle.items()):
        lines.append(f"| MACs/cycle {dtype} | {render_value(rate)} ({performance.tops(dtype):.3g} TOPS) |")
    lines.append(f"| element-wise ops/cycle | {render_value(performance.vector_ops_per_cycle)} |")
    lines.append(f"| main memory | {render_value(performance.memory_gbps)} GB/s |")
    if performance.sram_kib:
        lines.append(f"| on-chip SRAM | {render_value(performance.sram_kib)} KiB at {render_value(performance.sram_gbps)} GB/s |")
    if accelerator:
        lines.append(f"| host<->device transfer | {render_value(performance.transfer_gbps)} GB/s |")
        lines.append(f"| dispatch per partition | {render_value(performance.dispatch_us)} us |")
    lines.append(f"| overhead per op | {render_value(performance.op_overhead_us)} us |")
    return lines + [""]


def write_builtin_docs(folder: Path) -> list[Path]:
    """Write ``<folder>/<name>.md`` for every built-in target."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, target in BUILTIN_TARGETS.items():
        path = folder / f"{name}.md"
        path.write_text(target_markdown(target), encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m mapc.targets.docs FOLDER", file=sys.stderr)
        return 2
    for path in write_builtin_docs(Path(args[0])):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
