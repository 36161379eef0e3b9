"""The JSON manifest written beside a static LLM split: every graph's tensors with role, shape and dtype.

It is the contract a device integrator implements (``docs/llm.md``) and what
:mod:`mapc.llm.runtime` reads: nothing about the split is known to the runtime except through it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import Model, OutputError, UsageError

FORMAT = "mapc-static-llm"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
_ROLE = re.compile(r"^(input_ids|position_ids|attention_mask|rope_cos|rope_sin|token_embeds|position_embeds|hidden_states|logits|past_key|past_value|new_key|new_value)(?:\.(\d+))?$")


def tensor_entry(tensor: gs.Tensor, codes: Any = None) -> dict[str, Any]:
    """One tensor of the interface: role (and layer) from its name, shape, dtype, and for a
    tensor of integer codes its quantizer (``real = (code - zero_point) * scale``)."""
    match = _ROLE.match(tensor.name)
    if match is None:
        raise OutputError(f"tensor {tensor.name!r} of a static LLM graph has no role")
    entry: dict[str, Any] = {"name": tensor.name, "role": match.group(1)}
    if match.group(2) is not None:
        entry["layer"] = int(match.group(2))
    entry["shape"] = [int(d) if isinstance(d, (int, np.integer)) else str(d) for d in tensor.shape]
    entry["dtype"] = np.dtype(tensor.dtype).name
    if codes is not None:
        entry["quantization"] = {"scale": codes.scale, "zero_point": codes.zero_point}
    return entry


def graph_entry(model: Model, file: str, new_tokens: int | str, codes: Mapping[str, Any] | None = None) -> dict[str, Any]:
    codes = codes or {}
    return {
        "file": file,
        "new_tokens": new_tokens,
        "inputs": [tensor_entry(t, codes.get(t.name)) for t in model.graph.inputs],
        "outputs": [tensor_entry(t, codes.get(t.name)) for t in model.graph.outputs],
    }


def write_manifest(directory: Path, manifest: dict[str, Any]) -> Path:
    """Write ``manifest.json`` atomically."""
    path = directory / MANIFEST_NAME
    temporary = directory / f".{MANIFEST_NAME}.{os.getpid()}.tmp"
    try:
        temporary.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {error.strerror or error}") from None
    return path


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a split folder; a one-line error if it is missing or not a mapc split."""
    path = Path(directory) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{directory} holds no {MANIFEST_NAME}: not a folder written by 'mapc llm'") from None
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read {path}: {error}") from None
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise UsageError(f"{path} is not a {FORMAT} v{FORMAT_VERSION} manifest")
    return manifest
