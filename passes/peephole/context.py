"""What peephole rules see: the rewrite context plus the pass's options."""

from __future__ import annotations

from mapc.ir import Model, RewriteContext


class PeepholeContext(RewriteContext):
    """The rewrite context of ``peephole``; ``signed_zeros`` keeps ``x + 0.0`` for floats."""

    def __init__(self, model: Model, *, signed_zeros: bool) -> None:
        super().__init__(model)
        self.signed_zeros = signed_zeros
