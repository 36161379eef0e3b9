"""Bindings: the mask passes' precision follows the quantizer unless the user chose it."""

from __future__ import annotations

from mapc.options import MASK_PRECISION_FOLLOWS_QUANTIZATION as BINDING
from mapc.passes import get_pass
from mapc.passes.pipeline import build_pipeline, flatten_steps


def quantizer(scheme, **options):
    return get_pass("quantize")(scheme=scheme, calibration="random", **options)


def precisions(steps):
    return {step.name: step.options.precision for step in flatten_steps(steps) if step.name in BINDING.passes}


def test_an_8_bit_scheme_gives_the_int8_fill_and_a_16_bit_one_the_int16_fill():
    steps = build_pipeline("cleanup,fixpoint(attention-mask),decompose-attention")
    assert precisions(BINDING.apply(steps, quantizer("a8w8"), {})) == {"attention-mask": "int8", "decompose-attention": "int8"}
    assert precisions(BINDING.apply(steps, quantizer("a16w8"), {})) == {"attention-mask": "int16", "decompose-attention": "int16"}
    assert precisions(BINDING.apply(steps, quantizer("a8w8", activation_type="uint16"), {}))["attention-mask"] == "int16"


def test_weight_only_schemes_leave_the_masks_alone():
    steps = build_pipeline("attention-mask")
    assert precisions(BINDING.apply(steps, quantizer("w4"), {})) == {"attention-mask": "fp16"}


def test_a_precision_or_fill_the_user_chose_wins():
    in_pipeline = build_pipeline("attention-mask{mask_value=-5},decompose-attention{precision=fp32}")
    assert precisions(BINDING.apply(in_pipeline, quantizer("a8w8"), {})) == {"attention-mask": "fp16", "decompose-attention": "fp32"}
    by_options = build_pipeline("attention-mask,decompose-attention")
    chosen = BINDING.apply(by_options, quantizer("a8w8"), {"attention-mask": {"mask_value": -30}})
    assert precisions(chosen) == {"attention-mask": "fp16", "decompose-attention": "int8"}
