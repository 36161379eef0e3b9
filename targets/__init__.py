"""Target backends: what a given NPU supports, how the graph is partitioned for it, and how the
compiled model is lowered. See README "Targets"."""
