"""stream.factory: the one place that picks the CPU or the GPU composition of Unmasker."""
import pytest

from stream.errors import ModelError
from stream.factory import choose_path, create_unmasker
from stream.unmasker import Unmasker, models_available


@pytest.mark.skipif(not models_available(), reason="shipped models missing from models/weights")
def test_the_gpu_path_needs_the_models_cuda_and_a_torch_backend():
    assert choose_path("model", "auto", "cuda:0") == (True, "model", "cuda:0")
    assert choose_path("auto", "torch", "cuda", "torch") == (True, "model", "cuda")
    assert choose_path("model", "onnxruntime", "cuda:0")[0] is False       # ONNX Runtime's CUDA provider
    assert choose_path("model", "auto", "cpu")[0] is False
    assert choose_path("classical", "auto", "cuda")[0] is False
    assert choose_path("model", "auto", None) == (False, "model", None)


def test_bad_combinations_fail_before_anything_loads():
    with pytest.raises(ModelError, match="--tracker torch"):
        choose_path("model", "auto", "cpu", "torch")
    with pytest.raises(ValueError, match="tracker"):
        choose_path("model", "auto", None, "dlib")


def test_the_cpu_composition_drops_gpu_only_options():
    um = create_unmasker(method="classical", tracker="mediapipe", defer_download=True, precision="fp16",
                         cuda_graphs=False, max_faces=2)
    try:
        assert type(um) is Unmasker and um.method == "classical" and um.max_faces == 2
    finally:
        um.close()
