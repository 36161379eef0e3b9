"""Property-based testing for passes: random valid ONNX models and the differential check.

Needs hypothesis (``pip install 'mapc[test]'``)::

    from hypothesis import given
    from mapc.testing import onnx_models, assert_pass_preserves

    @given(onnx_models())
    def test_my_pass(model):
        assert_pass_preserves(model, "my-pass")

Profiles: ``ci`` (derandomized, fixed example count) and ``dev`` (more examples, random) are
registered on import; :func:`load_profile` picks ``ci`` when the ``CI`` environment variable is
set, else ``dev``, unless ``MAPC_HYPOTHESIS_PROFILE`` names one.
"""

from __future__ import annotations

import os

try:
    from hypothesis import HealthCheck, settings
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError("mapc.testing needs hypothesis: pip install 'mapc[test]'") from error

from mapc.testing.builder import ModelBuilder, TensorInfo
from mapc.testing.checks import assert_pass_preserves
from mapc.testing.strategies import ALL_FAMILIES, onnx_models

_QUIET_CHECKS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]

#: CI: reproducible, bounded run time.
settings.register_profile("ci", max_examples=200, derandomize=True, deadline=None, suppress_health_check=_QUIET_CHECKS, print_blob=True)
#: Local development: more examples, fresh randomness every run.
settings.register_profile("dev", max_examples=500, deadline=None, suppress_health_check=_QUIET_CHECKS, print_blob=True)


def load_profile() -> str:
    """Load the profile for this environment (see module docstring) and return its name."""
    name = os.environ.get("MAPC_HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
    settings.load_profile(name)
    return name


__all__ = ["ALL_FAMILIES", "ModelBuilder", "TensorInfo", "assert_pass_preserves", "load_profile", "onnx_models"]
