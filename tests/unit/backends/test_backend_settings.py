"""EMBEDDER_BACKEND and EMBEDDER_EXACT_FP32: read once, a bad value named, passed to the
service the server builds."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedder.errors import ConfigError
from embedder.server.bootstrap import build_service
from embedder.settings import Settings


def test_auto_is_the_default_and_each_backend_can_be_asked_for() -> None:
    assert Settings.from_env({}).backend == "auto"
    assert Settings.from_env({}).exact_fp32 is False
    for name in ("auto", "onnxruntime", "openvino", " OpenVINO "):
        assert Settings.from_env({"EMBEDDER_BACKEND": name}).backend == name.strip().lower()
    assert Settings.from_env({"EMBEDDER_EXACT_FP32": "1"}).exact_fp32 is True


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("EMBEDDER_BACKEND", "onnx", "auto, onnxruntime, openvino"),
        ("EMBEDDER_BACKEND", "cuda", "auto, onnxruntime, openvino"),
        ("EMBEDDER_EXACT_FP32", "maybe", "boolean"),
    ],
)
def test_a_bad_value_is_named_with_what_would_do(name: str, value: str, says: str) -> None:
    with pytest.raises(ConfigError, match=name) as err:
        Settings.from_env({name: value})
    assert says in str(err.value)


def test_the_server_builds_its_service_with_the_setting(tmp_path: Path) -> None:
    env = {
        "EMBEDDER_CATALOG": "starter",
        "EMBEDDER_MODELS_ROOT": str(tmp_path),
        "EMBEDDER_BACKEND": "openvino",
        "EMBEDDER_EXACT_FP32": "1",
    }
    service = build_service(Settings.from_env(env))
    runtimes = service.loader.opener.runtimes
    assert runtimes is not None
    assert runtimes.policy.backend == "openvino" and runtimes.policy.exact_fp32 is True
    assert runtimes.store.root == tmp_path
