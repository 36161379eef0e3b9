"""Targets described in a TOML file: ``mapc compile model.onnx --target my_npu.toml``.

The file uses the record's own vocabulary (:mod:`mapc.targets.spec`): top-level ``name``,
``description``, optional ``domain``, ``base`` (a built-in target to start from), ``sources``
and ``notes``,
and one table per section: ``[tensors]``, ``[ops]`` (with ``[ops.dtypes]``), ``[conv]``, ``[pool]``,
``[limits]``, ``[quantization]``, ``[performance]`` and ``[host]``. Every key is checked: an unknown key, a value of
the wrong type, an unknown dtype or operator, or a missing required key is a
:class:`~mapc.ir.errors.UsageError` naming the file and the key. ``examples/my_npu.toml`` shows
every key.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import onnx.defs

from mapc.ir import UsageError
from mapc.passes.quantize import QuantizationSupport
from mapc.targets.builtin import BUILTIN_TARGETS, builtin_target
from mapc.targets.builtin.host_cpu import APPLICATION_CPU
from mapc.targets.spec import (
    DTYPES,
    ConvLimits,
    OpLimits,
    OpSet,
    Performance,
    PoolLimits,
    Target,
    TensorLimits,
)

SECTIONS: dict[str, type] = {
    "tensors": TensorLimits,
    "ops": OpSet,
    "conv": ConvLimits,
    "pool": PoolLimits,
    "limits": OpLimits,
    "quantization": QuantizationSupport,
    "performance": Performance,
    "host": Performance,
}
TOP_LEVEL = {"name", "description", "domain", "base", "sources", "notes"}
DTYPE_KEYS = {"dtypes", "bias_dtypes", "float32_as", "macs_per_cycle", "matmul_dynamic_dtypes"}
#: Ops whose outputs have a natural range (quantization.fixed_range_ops).
NATURAL_RANGE_OPS = ("Softmax", "Sigmoid", "HardSigmoid", "Tanh")
#: Ops whose weights a 4-bit scheme can make int4 blocks (quantization.int4_ops).
INT4_OPS = ("MatMul", "Gemm")
#: String keys that take one of a few values.
CHOICES = {"norm_scale_type": ("int8", "uint8"), "norm_bias_type": ("int32", "uint8")}
PERFORMANCE_REQUIRED = ("clock_mhz", "macs_per_cycle", "vector_ops_per_cycle", "memory_gbps")


def load_target_file(path: str | Path) -> Target:
    """Read a target description; :class:`UsageError` naming the key on any problem."""
    location = Path(path)
    try:
        document = tomllib.loads(location.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"target file {location} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read target file {location}: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"{location}: not valid TOML: {error}") from None
    return TargetFileReader(location).read(document)


class TargetFileReader:
    """Turns one parsed TOML document into a :class:`Target`, reporting errors by key path."""

    def __init__(self, location: Path) -> None:
        self.location = location

    def fail(self, key: str, problem: str) -> typing.NoReturn:
        raise UsageError(f"{self.location}: key {key!r} {problem}")

    def read(self, document: dict[str, Any]) -> Target:
        for key in document:
            if key not in TOP_LEVEL and key not in SECTIONS:
                self.fail(key, f"is not a target setting (top-level keys: {', '.join(sorted(TOP_LEVEL | set(SECTIONS)))})")
        base = self._base(document.get("base"))
        name = self._string(document, "name", required=True)
        if not name.replace("-", "").replace("_", "").isalnum():
            self.fail("name", f"must be letters, digits, '-' or '_', got {name!r}")
        changes: dict[str, Any] = {
            "name": name,
            "description": self._string(document, "description", required=False) or f"Target described in {self.location.name}",
            "domain": self._string(document, "domain", required=False) or "",
            "kind": "accelerator",
            "origin": str(self.location),
            "sources": tuple(self._strings(document.get("sources", []), "sources")),
            "notes": self._string(document, "notes", required=False),
        }
        for section, record_type in SECTIONS.items():
            table = document.get(section)
            if table is None:
                continue
            if not isinstance(table, dict):
                self.fail(section, f"must be a table ([{section}]), got {type(table).__name__}")
            start = getattr(base, section) if base is not None else None
            if section == "host" and start is None:
                start = APPLICATION_CPU
            changes[section] = self._section(section, record_type, table, start)
        if base is None:
            for section, required in (("ops", "supported"), ("tensors", "dtypes")):
                if section not in changes or not getattr(changes[section], required):
                    self.fail(f"{section}.{required}", "is required (or start from a built-in with base = \"npu\")")
            if "performance" not in changes:
                self.fail("performance", "is required (or start from a built-in with base = \"npu\")")
            changes.setdefault("host", APPLICATION_CPU)
            return Target(**changes)
        if "domain" in changes and not changes["domain"]:
            changes["domain"] = f"mapc.{name.replace('-', '_')}"
        return dataclasses.replace(base, **changes)

    def _base(self, value: Any) -> Target | None:
        if value is None:
            return None
        try:
            base = builtin_target(value) if isinstance(value, str) else None
        except UsageError as error:
            self.fail("base", str(error))
        if base is None or base.is_host:
            choices = ", ".join(n for n, t in BUILTIN_TARGETS.items() if not t.is_host)
            self.fail("base", f"must name a built-in accelerator ({choices}), got {value!r}")
        return base

    def _string(self, table: Mapping[str, Any], key: str, *, required: bool) -> str:
        value = table.get(key)
        if value is None:
            if required:
                self.fail(key, "is required")
            return ""
        if not isinstance(value, str):
            self.fail(key, f"must be a string, got {value!r}")
        return value

    def _strings(self, value: Any, key: str) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(key, f"must be a list of strings, got {value!r}")
        return list(value)

    def _section(self, section: str, record_type: type, table: dict[str, Any], start: Any) -> Any:
        hints = typing.get_type_hints(record_type)
        fields = {f.name: f for f in dataclasses.fields(record_type)}
        values: dict[str, Any] = {}
        for key, raw in table.items():
            path = f"{section}.{key}"
            if key not in fields:
                self.fail(path, f"is not a setting of [{section}] (known: {', '.join(sorted(fields))})")
            values[key] = self._value(path, key, hints[key], raw)
        if start is not None:
            return dataclasses.replace(start, **values)
        if record_type is Performance:
            for key in PERFORMANCE_REQUIRED:
                if key not in values:
                    self.fail(f"{section}.{key}", "is required")
        return record_type(**values)

    def _value(self, path: str, key: str, hint: Any, raw: Any) -> Any:
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if origin in (typing.Union, types.UnionType):
            inner = [a for a in args if a is not type(None)]
            return self._value(path, key, inner[0], raw)
        if hint is bool:
            if not isinstance(raw, bool):
                self.fail(path, f"must be true or false, got {raw!r}")
            return raw
        if hint is int:
            if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
                self.fail(path, f"must be a positive integer, got {raw!r}")
            return raw
        if hint is float:
            if isinstance(raw, bool) or not isinstance(raw, (int, float)) or raw < 0:
                self.fail(path, f"must be a non-negative number, got {raw!r}")
            if key in ("clock_mhz", "vector_ops_per_cycle", "memory_gbps") and raw == 0:
                self.fail(path, "must be greater than 0")
            return float(raw)
        if hint is str:
            if not isinstance(raw, str):
                self.fail(path, f"must be a string, got {raw!r}")
            if key in DTYPE_KEYS:
                self._check_dtype(path, raw)
            if key in CHOICES and raw not in CHOICES[key]:
                self.fail(path, f"must be one of {', '.join(CHOICES[key])}, got {raw!r}")
            return raw
        if origin is frozenset:
            items = self._strings(raw, path)
            if key in DTYPE_KEYS:
                for item in items:
                    self._check_dtype(path, item)
            if key == "supported":
                for item in items:
                    self._check_op(path, item)
            return frozenset(items)
        if origin is tuple and args == (str, Ellipsis):  # quantization.schemes, activation_types, fixed_range_ops, int4_ops
            items = self._strings(raw, path)
            if key == "activation_types":
                for item in items:
                    self._check_dtype(path, item)
            if key == "fixed_range_ops":
                for item in items:
                    if item not in NATURAL_RANGE_OPS:
                        self.fail(path, f"names {item!r}, which has no natural output range (ops: {', '.join(NATURAL_RANGE_OPS)})")
            if key == "int4_ops":
                for item in items:
                    if item not in INT4_OPS:
                        self.fail(path, f"names {item!r}, which takes no int4 weight blocks (ops: {', '.join(INT4_OPS)})")
            return tuple(items)
        if origin is tuple and args == (int, Ellipsis):  # quantization.block_sizes
            if not isinstance(raw, list) or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in raw):
                self.fail(path, f"must be a list of positive integers, got {raw!r}")
            return tuple(raw)
        if origin is tuple:  # fused_patterns: a list of op chains
            if not isinstance(raw, list) or not all(isinstance(chain, list) and len(chain) >= 2 for chain in raw):
                self.fail(path, f"must be a list of op chains like [[\"Conv\", \"Relu\"]], got {raw!r}")
            chains = []
            for chain in raw:
                for op in self._strings(chain, path):
                    self._check_op(path, op)
                chains.append(tuple(chain))
            return tuple(chains)
        if origin in (Mapping, dict, typing.Mapping):
            return self._mapping(path, key, args[1], raw)
        raise TypeError(f"no TOML reading for {hint!r}")  # pragma: no cover - a new field type

    def _mapping(self, path: str, key: str, value_hint: Any, raw: Any) -> dict[str, Any]:
        if not isinstance(raw, dict):
            self.fail(path, f"must be a table, got {raw!r}")
        result: dict[str, Any] = {}
        for name, value in raw.items():
            entry = f"{path}.{name}"
            if key == "max_rank":  # ops.max_rank: op -> rank
                self._check_op(entry, name)
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    self.fail(entry, f"must be a positive integer, got {value!r}")
                result[name] = value
            elif key == "macs_per_cycle":
                self._check_dtype(entry, name)
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                    self.fail(entry, f"must be a positive number, got {value!r}")
                result[name] = float(value)
            else:  # ops.dtypes: op -> dtypes
                self._check_op(entry, name)
                items = self._strings(value, entry)
                for item in items:
                    self._check_dtype(entry, item)
                result[name] = frozenset(items)
        return result

    def _check_dtype(self, path: str, dtype: str) -> None:
        if dtype not in DTYPES:
            self.fail(path, f"names unknown dtype {dtype!r} (known: {', '.join(DTYPES)})")

    def _check_op(self, path: str, op: str) -> None:
        if "::" in op:
            return  # a custom-domain op (domain::Op) cannot be checked against a schema
        if not onnx.defs.has(op):
            self.fail(path, f"names unknown operator {op!r} (use an ONNX op type, or domain::Op for other domains)")
