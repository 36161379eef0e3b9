"""The reference runtime of a static LLM split: greedy decoding with onnxruntime, exactly as the manifest says.

This is the host loop a device integrator ports. The cache is one array per layer and kind,
``[1, kv_heads, context, head_dim]``, where slot ``j`` holds the token at position ``j``.

* **Prefill** takes up to N prompt tokens at positions ``n .. n+L-1`` (``n`` tokens already
  cached, ``n + N <= context``). A chunk shorter than N is left-padded with the pad token; the
  pad rows and columns are masked. The graph reads the cache's first ``context - N`` slots; the
  mask attends slot ``j`` when ``j < n`` and, among the chunk's own tokens (the last N columns),
  token ``k`` attends token ``l <= k``. The new keys and values of real tokens go to slots
  ``n .. n+L-1``. A longer prompt runs as several chunks; what does not fit a chunk
  (``n + N > context``) runs through decode.
* **Decode** takes one token at position ``n`` (``n < context``), reads slots ``0 .. context-2``,
  attends slots ``j < n`` and itself, and its keys and values go to slot ``n``.

``mask_fill`` (the manifest's) marks what may not be attended. A tensor whose manifest entry has
a ``quantization`` carries integer codes, ``real = (code - zero_point) * scale``: the host
quantizes what it feeds (mask, rotary rows, embeddings), dequantizes the logits, and keeps the
cache as codes, copied as they are when the graphs' past inputs and new outputs share the
quantizer (mapc ties them) and converted otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mapc.ir import UsageError, make_session
from mapc.llm.manifest import read_manifest


class StaticRunner:
    """Both graphs of a split folder loaded in onnxruntime, with the cache they share."""

    def __init__(self, directory: str | os.PathLike, record: Callable[[str, dict[str, np.ndarray]], None] | None = None) -> None:
        #: Called with each graph's name and feeds before it runs (calibration samples).
        self.record = record
        self.directory = Path(directory)
        self.manifest = read_manifest(directory)
        self.context = int(self.manifest["context"])
        self.fill = float(self.manifest["mask_fill"])
        entries = {**self.manifest["graphs"], **self.manifest.get("host_graphs", {})}
        self.sessions = {name: make_session(_load(self.directory / entry["file"]), base_dir=self.directory)
                         for name, entry in entries.items()}
        self.tables = {name: (np.load(self.directory / spec["file"]), int(spec["axis"]))
                       for name, spec in self.manifest["rope"]["tables"].items()}
        self.reset()

    def reset(self) -> None:
        """Empty the cache."""
        decode = self.manifest["graphs"]["decode"]
        self.cache: dict[str, np.ndarray] = {}
        #: How the cache stores each tensor: the decode graph's past input (dtype, quantizer).
        self.cache_specs: dict[str, dict] = {}
        for entry in decode["inputs"]:
            if entry["role"] in ("past_key", "past_value"):
                shape = list(entry["shape"])
                shape[2] = self.context
                self.cache[entry["name"]] = encode(np.zeros(shape, np.float32), entry)
                self.cache_specs[entry["name"]] = entry
        self.filled = 0

    def step(self, graph: str, tokens: Sequence[int]) -> np.ndarray:
        """Run ``graph`` on ``tokens`` (at most its ``new_tokens``) at the next positions; return
        the logits of the last token and write the new keys and values into the cache."""
        entry = self.manifest["graphs"][graph]
        width = int(entry["new_tokens"])
        count = len(tokens)
        if not 1 <= count <= width:
            raise UsageError(f"the {graph} graph takes 1 to {width} tokens, not {count}")
        start = self.filled
        past = self.context - width
        if start > past or start + count > self.context:
            raise UsageError(f"the cache holds {start} of {self.context} positions: no room for {count} more in {graph}")
        pad = width - count
        positions = np.zeros(width, np.int64)
        positions[pad:] = np.arange(start, start + count)
        mask = np.full((width, self.context), self.fill, np.float32)
        for row in range(pad, width):
            mask[row, :start] = 0.0
            mask[row, past + pad: past + row + 1] = 0.0
        ids = np.array([[int(self.manifest["pad_token_id"])] * pad + list(tokens)], np.int64)
        embeds = self._embed(ids, positions[None])
        feeds: dict[str, np.ndarray] = {}
        for spec in entry["inputs"]:
            role, name = spec["role"], spec["name"]
            if role == "input_ids":
                feeds[name] = ids.astype(spec["dtype"])
            elif role in ("token_embeds", "position_embeds"):
                feeds[name] = encode(embeds[name], spec)
            elif role == "position_ids":
                feeds[name] = positions[None].astype(spec["dtype"])
            elif role == "attention_mask":
                feeds[name] = encode(mask.reshape(spec["shape"]), spec)
            elif role in ("rope_cos", "rope_sin"):
                table, axis = self.tables[name]
                feeds[name] = encode(np.moveaxis(table[positions], 0, axis).reshape(spec["shape"]), spec)
            elif role in ("past_key", "past_value"):
                feeds[name] = convert(self.cache[name][:, :, :past], self.cache_specs[name], spec)
            else:
                raise UsageError(f"input {name!r} of the {graph} graph has role {role!r}, which the runtime does not know")
        if self.record is not None:  # the token and position ids too: the graph reads them before folding
            self.record(graph, {"input_ids": ids.astype(np.int32), "position_ids": positions[None].astype(np.int32), **feeds})
        names = [spec["name"] for spec in entry["outputs"]]
        values = dict(zip(names, self.sessions[graph].run(names, feeds)))
        for spec in entry["outputs"]:
            if spec["role"] in ("new_key", "new_value"):
                cache_name = f"past_{spec['role'][4:]}.{spec['layer']}"
                new = convert(values[spec["name"]][:, :, pad:], spec, self.cache_specs[cache_name])
                self.cache[cache_name][:, :, start: start + count] = new
        self.filled += count
        outputs = {spec["role"]: decode(values[spec["name"]], spec) for spec in entry["outputs"]}
        logits = outputs["logits"] if "logits" in outputs else self._lm_head(outputs["hidden_states"])
        return logits[0, -1]

    def _lm_head(self, hidden: np.ndarray) -> np.ndarray:
        """The split's own lm_head graph (``host_graphs.lm_head``) on the step's hidden states."""
        entry = self.manifest["host_graphs"]["lm_head"]
        (spec,) = entry["inputs"]
        return self.sessions["lm_head"].run([entry["outputs"][0]["name"]], {spec["name"]: hidden.astype(spec["dtype"])})[0]

    def _embed(self, ids: np.ndarray, positions: np.ndarray) -> dict[str, np.ndarray]:
        """The host's embedding lookups (``host_graphs.embedding``), if the split has them."""
        entry = self.manifest.get("host_graphs", {}).get("embedding")
        if entry is None:
            return {}
        values = {"input_ids": ids, "position_ids": positions}  # the embedding graph's I/O is float
        feeds = {spec["name"]: values[spec["role"]].astype(spec["dtype"]) for spec in entry["inputs"]}
        names = [spec["name"] for spec in entry["outputs"]]
        return dict(zip(names, self.sessions["embedding"].run(names, feeds)))

    def prefill(self, prompt: Sequence[int]) -> np.ndarray:
        """Feed a whole prompt (chunked prefill, then decode for what no chunk fits); the last logits."""
        if not prompt:
            raise UsageError("the prompt is empty")
        if self.filled + len(prompt) > self.context:
            raise UsageError(f"a prompt of {len(prompt)} tokens does not fit a cache of {self.context} positions")
        width = int(self.manifest["graphs"]["prefill"]["new_tokens"])
        index = 0
        logits = None
        while index < len(prompt):
            chunk = list(prompt[index: index + width])
            if self.filled + width <= self.context:
                logits = self.step("prefill", chunk)
                index += len(chunk)
            else:
                logits = self.step("decode", [prompt[index]])
                index += 1
        return logits


def encode(values: np.ndarray, spec: dict) -> np.ndarray:
    """``values`` as the tensor ``spec`` describes: its dtype, as codes when it is quantized."""
    quantization = spec.get("quantization")
    if quantization is None:
        return np.asarray(values).astype(spec["dtype"])
    info = np.iinfo(spec["dtype"])
    codes = np.rint(np.asarray(values, np.float32) / np.float32(quantization["scale"])) + quantization["zero_point"]
    return np.clip(codes, info.min, info.max).astype(spec["dtype"])


def decode(values: np.ndarray, spec: dict) -> np.ndarray:
    """The real values of a tensor ``spec`` describes (codes dequantized)."""
    quantization = spec.get("quantization")
    if quantization is None:
        return values
    return ((values.astype(np.int64) - quantization["zero_point"]).astype(np.float32) * np.float32(quantization["scale"]))


def convert(values: np.ndarray, source: dict, target: dict) -> np.ndarray:
    """Values stored as ``source`` describes, stored as ``target`` does: the same bytes when both
    have one dtype and quantizer (mapc ties the cache's), else through the real values."""
    if source["dtype"] == target["dtype"] and source.get("quantization") == target.get("quantization"):
        return values
    return encode(decode(values, source), target)


def teacher_forced(runner: StaticRunner, prompt_ids: Sequence[int], tokens: Sequence[int]) -> list[np.ndarray]:
    """The logits the split gives after the prompt and after each of ``tokens`` but the last
    (what greedy decoding chose each token from, were the split to choose the same ones)."""
    runner.reset()
    logits = [runner.prefill([int(t) for t in prompt_ids])]
    for token in tokens[:-1]:
        if runner.filled >= runner.context:
            break
        logits.append(runner.step("decode", [int(token)]))
    return logits


def generate(directory: str | os.PathLike, prompt_ids: Sequence[int], max_new_tokens: int) -> list[int]:
    """Greedy decoding through a split folder: up to ``max_new_tokens`` new token ids (fewer when
    the cache fills)."""
    runner = StaticRunner(directory)
    vocab = int(runner.manifest["vocab_size"])
    if any(not 0 <= int(t) < vocab for t in prompt_ids):
        raise UsageError(f"prompt token ids must lie in [0, {vocab})")
    logits = runner.prefill([int(t) for t in prompt_ids])
    tokens: list[int] = []
    while len(tokens) < max_new_tokens:
        token = int(np.argmax(logits))
        tokens.append(token)
        if len(tokens) == max_new_tokens or runner.filled >= runner.context:
            break
        logits = runner.step("decode", [token])
    return tokens


def _load(path: Path) -> Any:
    import onnx

    return onnx.load(str(path), load_external_data=False)
