"""A picture of the partitioned graph as inline SVG, laid out without any external tool.

Nodes are placed in layers by longest-path depth from the inputs (a layered, Sugiyama-style
drawing): each layer is one row, ordered by the mean position of the node's inputs in the rows
above (two sweeps) to keep edges short and crossings few. Every node is coloured by the
partition it runs in (CPU nodes grey) and carries a tooltip with its op, device and, for CPU
nodes, why. Graphs above :data:`MAX_DRAWN_NODES` are drawn one box per segment instead. QuantizeLinear/DequantizeLinear nodes are not drawn: edges run
through them, and an op that reads or writes quantized tensors is marked "(q)", so a quantized
graph reads like the float one instead of a band of DequantizeLinear boxes.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from html import escape

from mapc.targets import Plan

MAX_DRAWN_NODES = 1500
BOX_WIDTH = 132
BOX_HEIGHT = 30
GAP_X = 14
GAP_Y = 46
MARGIN = 16
#: Partition colours (colour-blind friendly, Okabe-Ito based); CPU is grey.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#8C6BB1", "#4D9221", "#B8860B", "#1B9E77")
CPU_COLOUR = "#9A9A9A"


@dataclass
class Box:
    """One drawn vertex: a node, or a whole segment for large graphs."""

    key: int
    label: str
    detail: str
    tooltip: str
    segment: int
    device: str


def segment_colour(plan: Plan, segment_id: int) -> str:
    """The colour of a segment: one per partition on the target, grey for the CPU."""
    order = [s.id for s in plan.segments if s.on_target]
    if segment_id not in order:
        return CPU_COLOUR
    return PALETTE[order.index(segment_id) % len(PALETTE)]


def render_svg(plan: Plan) -> str:
    """The graph of ``plan`` as a standalone ``<svg>`` element."""
    boxes, edges = _node_view(plan) if len(plan.model_view.nodes) <= MAX_DRAWN_NODES else _segment_view(plan)
    positions, width, height = _layout(len(boxes), edges)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="graph" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="graph coloured by partition">',
        '<defs><marker id="arrow" viewBox="0 0 8 8" refX="7" refY="4" markerWidth="7" markerHeight="7" orient="auto">'
        '<path d="M0,0 L8,4 L0,8 z" fill="#777"/></marker></defs>',
        '<g class="edges">',
    ]
    for source, sink in edges:
        (x1, y1), (x2, y2) = positions[source], positions[sink]
        start = (x1 + BOX_WIDTH / 2, y1 + BOX_HEIGHT)
        end = (x2 + BOX_WIDTH / 2, y2)
        bend = max(GAP_Y / 2, (end[1] - start[1]) / 2)
        parts.append(
            f'<path d="M{start[0]:.1f},{start[1]:.1f} C{start[0]:.1f},{start[1] + bend:.1f} '
            f'{end[0]:.1f},{end[1] - bend:.1f} {end[0]:.1f},{end[1]:.1f}" marker-end="url(#arrow)"/>'
        )
    parts.append("</g>")
    for box in boxes:
        x, y = positions[box.key]
        colour = segment_colour(plan, box.segment)
        on_cpu = box.device == "cpu"
        faded = ' fill-opacity="0.35"' if on_cpu else ""
        parts.append(
            f'<g class="node{" cpu" if on_cpu else ""}" data-segment="{box.segment}" data-device="{escape(box.device)}" '
            f'transform="translate({x:.1f},{y:.1f})"><title>{escape(box.tooltip)}</title>'
            f'<rect width="{BOX_WIDTH}" height="{BOX_HEIGHT}" rx="5" fill="{colour}"{faded}/>'
            f'<text x="{BOX_WIDTH / 2}" y="13" text-anchor="middle" class="op">{escape(_clip(box.label, 20))}</text>'
            f'<text x="{BOX_WIDTH / 2}" y="25" text-anchor="middle" class="name">{escape(_clip(box.detail, 24))}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


#: Ops folded into the edges of the drawing (their op is marked "(q)").
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


def _node_view(plan: Plan) -> tuple[list[Box], list[tuple[int, int]]]:
    device_of = plan.device_of()
    nodes = plan.model_view.nodes
    hidden = {node.index for node in nodes if node.op in QDQ_OPS}
    if len(hidden) == len(nodes):
        hidden = set()
    shown = [node for node in nodes if node.index not in hidden]
    position = {node.index: index for index, node in enumerate(shown)}
    writers = {sink: source for source, sinks in enumerate(plan.readers) for sink in sinks}
    quantized = {n for h in hidden for n in [*plan.readers[h], writers.get(h, -1)] if n not in hidden}
    boxes = []
    for node in shown:
        segment = device_of[node.index]
        where = f"partition {segment.id} on {segment.device}" if segment.on_target else "CPU"
        reasons = plan.reasons.get(node.index, [])
        why = "".join(f"\n- {r.code}: {r.message}" for r in reasons) if segment.device == "cpu" else ""
        label = f"{node.op} (q)" if node.index in quantized else node.op
        boxes.append(Box(position[node.index], label, node.label, f"{node.label} ({node.op}) - {where}{why}", segment.id, segment.device))
    edges = sorted({(position[source], position[sink]) for source in position for sink in _visible_readers(plan, source, hidden)})
    return boxes, edges


def _visible_readers(plan: Plan, source: int, hidden: set[int]) -> set[int]:
    """The drawn nodes ``source`` feeds, looking through Q/DQ nodes."""
    found, stack, seen = set(), list(plan.readers[source]), set()
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if node in hidden:
            stack.extend(plan.readers[node])
        else:
            found.add(node)
    return found


def _segment_view(plan: Plan) -> tuple[list[Box], list[tuple[int, int]]]:
    device_of = plan.device_of()
    boxes = []
    for position, segment in enumerate(plan.segments):
        label = f"{segment.device} #{segment.id}"
        boxes.append(Box(position, label, f"{len(segment.nodes)} nodes", f"segment {segment.id} on {segment.device}: {len(segment.nodes)} nodes", segment.id, segment.device))
    index = {segment.id: position for position, segment in enumerate(plan.segments)}
    edges = sorted(
        {
            (index[device_of[source].id], index[device_of[sink].id])
            for source, sinks in enumerate(plan.readers)
            for sink in sinks
            if device_of[source].id != device_of[sink].id
        }
    )
    return boxes, edges


def _layout(count: int, edges: list[tuple[int, int]]) -> tuple[dict[int, tuple[float, float]], int, int]:
    """Positions of ``count`` vertices (indices in topological order) in depth layers."""
    predecessors: dict[int, list[int]] = defaultdict(list)
    for source, sink in edges:
        predecessors[sink].append(source)
    depth = [0] * count
    for vertex in range(count):
        depth[vertex] = max((depth[p] + 1 for p in predecessors[vertex]), default=0)
    layers: dict[int, list[int]] = defaultdict(list)
    for vertex in range(count):
        layers[depth[vertex]].append(vertex)
    column: dict[int, float] = {}
    for _sweep in range(2):
        for level in sorted(layers):
            row = layers[level]
            if level > 0:
                row.sort(key=lambda v: (_mean([column[p] for p in predecessors[v] if p in column], column.get(v, 0.0)), v))
            for slot, vertex in enumerate(row):
                column[vertex] = slot - (len(row) - 1) / 2
    widest = max((len(row) for row in layers.values()), default=1)
    width = int(2 * MARGIN + widest * BOX_WIDTH + (widest - 1) * GAP_X)
    height = int(2 * MARGIN + len(layers) * BOX_HEIGHT + max(len(layers) - 1, 0) * GAP_Y)
    centre = width / 2
    positions = {
        vertex: (centre + column[vertex] * (BOX_WIDTH + GAP_X) - BOX_WIDTH / 2, MARGIN + level * (BOX_HEIGHT + GAP_Y))
        for level, row in layers.items()
        for vertex in row
    }
    return positions, width, height


def _mean(values: list[float], default: float) -> float:
    return sum(values) / len(values) if values else default
