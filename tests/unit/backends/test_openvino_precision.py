"""What an OpenVINO session says it computes in: the CPU plugin reports its precision hint as
an element type (`<Type: 'bfloat16'>` as a string), which a BF16 run must read as `bf16`
(it once read `fp32` on every CPU, so `/v1/models` hid the BF16 compute)."""

from __future__ import annotations

import pytest

from embedder.service import Service
from embedder.sessions import SessionConfig

ov = pytest.importorskip("embedder.backends.openvino")
openvino = pytest.importorskip("openvino")


class _Compiled:
    def __init__(self, hint: object) -> None:
        self.hint = hint

    def get_property(self, name: str) -> object:
        assert name == "INFERENCE_PRECISION_HINT"
        return self.hint


@pytest.mark.parametrize(
    ("hint", "said"), [(openvino.Type.bf16, "bf16"), (openvino.Type.f32, "fp32"), ("bf16", "bf16")]
)
def test_the_hint_reads_as_its_precision(hint: object, said: str) -> None:
    assert ov._compute_precision(_Compiled(hint), "bf16") == said


def test_a_session_asked_for_bf16_says_bf16_where_the_cpu_has_the_units(
    starter_service: Service,
) -> None:
    path = starter_service.store.root / "all-minilm-l6-v2" / "model.onnx"
    fp32 = ov.open_openvino(path, SessionConfig(), "fp32")
    assert fp32.compute_precision == "fp32"
    if not ov.bf16_units():
        pytest.skip("no BF16 units here: the plugin computes FP32 whatever the hint")
    assert ov.open_openvino(path, SessionConfig(), "bf16").compute_precision == "bf16"
