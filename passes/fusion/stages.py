"""The stages of ``fuse`` and the order of their rules: the one place that order is written.

``canonical`` rules repeat until none fires (one spelling per idiom, so the fusion patterns fit
every exporter); ``fold`` rules fold weights and biases into the ops that read them; ``fuse``
rules turn decomposed layers into one standard op. Within a stage, rules run in list order,
each over the whole graph.
"""

from __future__ import annotations

from mapc.passes.fusion.attention import AttentionFusion, AttentionOnUnrepeatedKV
from mapc.passes.fusion.batch_norm import BatchNormToMulAdd, ConvBatchNormFold
from mapc.passes.fusion.bias import ConvBiasFold, GemmBiasFold, MatMulAddToGemm
from mapc.passes.fusion.canonical import (
    AddFromSubNeg,
    ConstantSecond,
    DivByConstant,
    DivFromReciprocal,
    DoubleNeg,
    NegFromMul,
    NegFromSub,
    PowToMul,
    ReciprocalFromDiv,
    SoftmaxOverLastAxis,
    SubFromAddNeg,
)
from mapc.passes.fusion.contrib import RULES as CONTRIB
from mapc.passes.fusion.canonical_attention import AttentionScaleToScores, KTransposeInOneStep, MultiplicativeMaskToWhere, WhereMaskToAdd
from mapc.passes.fusion.gelu import GeluExactFusion, GeluTanhFactoredFusion, GeluTanhFusion
from mapc.passes.fusion.normalization import LayerNormFusion, RmsNormFusion, TfLayerNormFusion
from mapc.passes.fusion.pad import PadIntoConv
from mapc.passes.fusion.rotary import PartialRotaryFusion, RotaryFusion
from mapc.passes.peephole.identities import identity_cast

CANONICAL = [
    identity_cast,
    ConstantSecond(),
    DivByConstant(),
    AddFromSubNeg(),
    DoubleNeg(),
    NegFromMul(),
    NegFromSub(),
    SubFromAddNeg(),
    PowToMul(),
    ReciprocalFromDiv(),
    DivFromReciprocal(),
    SoftmaxOverLastAxis(),
    MultiplicativeMaskToWhere(),
    WhereMaskToAdd(),
    AttentionScaleToScores(),
    KTransposeInOneStep(),
]
FOLD = [PadIntoConv(), ConvBiasFold(), GemmBiasFold(), ConvBatchNormFold(), BatchNormToMulAdd(), MatMulAddToGemm()]
FUSE = [
    *CONTRIB,
    AttentionFusion(),
    AttentionOnUnrepeatedKV(),
    PartialRotaryFusion(),
    RotaryFusion(),
    LayerNormFusion(),
    TfLayerNormFusion(),
    RmsNormFusion(),
    GeluExactFusion(),
    GeluTanhFusion(),
    GeluTanhFactoredFusion(),
]
STAGES = {"canonical": CANONICAL, "fold": FOLD, "fuse": FUSE}
