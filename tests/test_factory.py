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


@pytest.mark.skipif(not models_available(), reason="shipped models missing from models/weights")
def test_a_weights_folder_runs_its_candidate_and_the_shipped_rest(tmp_path):
    """A training candidate (here: the shipped inpainter with its output bias pushed to +20, so the
    sigmoid draws the hole white) runs through the stream from its folder; the analyser the folder
    lacks is the shipped one; a folder without either network is refused with one line."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from models.spec import WEIGHTS_DIR
    from tests.faces import masked_astronaut

    graph = onnx.load(WEIGHTS_DIR / "inpainter_fast.onnx")
    bias = next(t for t in graph.graph.initializer if t.name == "out.bias")
    bias.CopyFrom(numpy_helper.from_array(np.full(numpy_helper.to_array(bias).shape, 20, np.float32), "out.bias"))
    onnx.save(graph, tmp_path / "inpainter_fast.onnx")
    image, truth = masked_astronaut()
    core = truth > 0
    core = core & (np.cumsum(core, 0) > 30) & (np.cumsum(core[::-1], 0)[::-1] > 30)   # well inside the covering
    with create_unmasker(method="model", weights_dir=tmp_path, mode="image", smoothing=False) as um:
        assert um.compositor.reconstructor.runner.model_path == tmp_path / "inpainter_fast.onnx"
        assert um.analyser.runner.model_path == WEIGHTS_DIR / "analyser.onnx"
        assert um.compositor.reconstructor.colour is None      # its colour fit is not in the folder
        white = um.process(image).image
    with create_unmasker(method="model", mode="image", smoothing=False) as um:
        shipped = um.process(image).image
    assert np.median(white[core]) >= 250 > np.median(shipped[core])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="holds neither analyser.onnx nor inpainter_fast.onnx"):
        create_unmasker(method="model", weights_dir=empty)
