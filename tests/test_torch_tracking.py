"""mediapipe's face detector and mesh run by torch (models.tflite_graph, stream.torch_tracking).

Three levels of parity: the rebuilt graphs against the TFLite interpreter on the same tensors
(tflite-runtime, float tolerance), the decoded detections and tracked landmarks against mediapipe's
own solutions on the same images, and (on CUDA) fp16 on the device against fp32 on the CPU.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from stream.errors import ModelError
from stream.tracking import FaceTracker, RunningMode
from tests.faces import masked_astronaut

torch = pytest.importorskip("torch")   # the inference install has no torch
pytest.importorskip("tflite", reason="reading .tflite graphs needs the 'tflite' package (test extra)")

from models.tflite_graph import TfliteGraph, UnsupportedGraph, densify  # noqa: E402
from stream.torch_tracking import (DETECTOR_FILE, MESH_FILE, TorchFaceTracker, mediapipe_model_path,  # noqa: E402
                                   roi_from_points, roi_theta, roi_to_frame, weighted_nms)

SHORT_RANGE_FILE = "face_detection/face_detection_short_range.tflite"


def _astronaut_bgr():
    from skimage import data
    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def _nme(a, b, upper_only: bool = False):
    """Mean landmark distance over the outer-eye-corner distance (a's); `upper_only`: the points above
    the nose tip (in a), which a mask does not hide."""
    keep = a[:, 1] < a[1, 1] if upper_only else slice(None)
    return float(np.linalg.norm(a[keep] - b[keep], axis=1).mean() / np.linalg.norm(a[33] - a[263]))


# -- the graph ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [DETECTOR_FILE, MESH_FILE, SHORT_RANGE_FILE])
def test_rebuilt_graph_matches_the_tflite_interpreter(name):
    interpreter = pytest.importorskip(
        "tflite_runtime.interpreter",
        reason="the TFLite reference interpreter (tflite-runtime) has wheels for Python < 3.12 only")
    path = mediapipe_model_path(name)
    ref = interpreter.Interpreter(str(path))
    ref.allocate_tensors()
    net = TfliteGraph.from_file(path).eval()
    x = np.random.default_rng(0).uniform(-1, 1, ref.get_input_details()[0]["shape"]).astype(np.float32)
    ref.set_tensor(ref.get_input_details()[0]["index"], x)
    ref.invoke()
    with torch.no_grad():
        got = dict(zip(net.output_names, net(torch.from_numpy(x).permute(0, 3, 1, 2))))
    for d in ref.get_output_details():
        want = ref.get_tensor(d["index"])
        out = got[d["name"]].numpy()
        assert out.shape == want.shape
        err = np.abs(out - want).max()
        print(f"\n{path.name} {d['name']}: max |err| {err:.2e} (values up to {np.abs(want).max():.1f})")
        assert err < 1e-5 * max(1.0, np.abs(want).max()) * 10


def test_rebuilt_graph_takes_a_batch():
    net = TfliteGraph.from_file(mediapipe_model_path(MESH_FILE)).eval()
    x = torch.rand(3, 3, 192, 192)
    with torch.no_grad():
        batch = net(x)
        single = net(x[1:2])
    assert batch[0].shape == (3, 1, 1, 1404)
    torch.testing.assert_close(batch[0][1:2], single[0], atol=1e-3, rtol=1e-4)


def test_densify_rebuilds_a_block_sparse_matrix():
    """A 4x8 matrix, CSR over rows with 1x4 blocks along the columns (how TFLite stores sparse weights)."""
    dense = np.zeros((4, 8), np.float32)
    dense[0, 4:8] = [1, 2, 3, 4]
    dense[2, 0:4] = [5, 6, 7, 8]
    dense[2, 4:8] = [9, 10, 11, 12]
    values = np.arange(1, 13, dtype=np.float32)
    levels = [("dense", 4),                                              # rows
              ("csr", np.array([0, 1, 1, 3, 3]), np.array([1, 0, 1])),   # column blocks present per row
              ("dense", 4)]                                              # inside a block
    np.testing.assert_array_equal(densify(values, (4, 8), [0, 1, 2], [1], levels), dense)


def test_unreadable_or_unsupported_graphs_fail_clearly(tmp_path):
    bad = tmp_path / "not_a_model.tflite"
    with pytest.raises(UnsupportedGraph, match="cannot read"):
        TfliteGraph.from_file(bad)
    with pytest.raises(ModelError, match="was not found"):
        mediapipe_model_path("face_detection/no_such_model.tflite", tmp_path)


def test_model_dir_takes_precedence(tmp_path):
    src = mediapipe_model_path(MESH_FILE)
    (tmp_path / src.name).write_bytes(src.read_bytes())
    assert mediapipe_model_path(MESH_FILE, tmp_path) == tmp_path / src.name


# -- geometry ------------------------------------------------------------------------------------------

def test_roi_sampling_and_projection_agree():
    """A point drawn in the frame lands where roi_to_frame says the crop pixel maps."""
    frame = np.zeros((300, 400, 3), np.float32)
    cv2.circle(frame, (250, 120), 3, (255, 255, 255), -1)
    centre, side, angle = np.array([230.0, 140.0]), 120.0, np.deg2rad(25)
    theta = torch.from_numpy(roi_theta(centre, side, angle, (400, 300))[None])
    grid = torch.nn.functional.affine_grid(theta, (1, 3, 192, 192), align_corners=False)
    crop = torch.nn.functional.grid_sample(torch.from_numpy(frame).permute(2, 0, 1)[None], grid,
                                           align_corners=False)[0, 0].numpy()
    ys, xs = np.nonzero(crop > 128)
    spot = np.array([[xs.mean() + 0.5, ys.mean() + 0.5]])          # edge convention, as mediapipe
    back = roi_to_frame(spot, centre, side, angle, 192)[0]
    np.testing.assert_allclose(back, [250.5, 120.5], atol=0.7)


def test_roi_is_level_with_the_eyes_and_scaled():
    pts = np.array([[100.0, 100.0], [200.0, 150.0]])
    centre, side, angle = roi_from_points(pts, np.array([0.0, 0.0]), np.array([10.0, 10.0]))
    np.testing.assert_allclose(centre, [150, 125])
    assert side == pytest.approx(150.0) and angle == pytest.approx(np.pi / 4)


def test_weighted_nms_merges_overlaps_and_keeps_the_rest():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], np.float64)
    kps = np.zeros((3, 6, 2))
    kps[1] += 1.0
    scores = np.array([0.9, 0.6, 0.7])
    out = weighted_nms(boxes, kps, scores)
    assert [round(s, 2) for _, _, s in out] == [0.9, 0.7]
    np.testing.assert_allclose(out[0][0], [0.4, 0, 10.4, 10])          # (0.9*0 + 0.6*1) / 1.5
    np.testing.assert_allclose(out[0][1], 0.4)
    np.testing.assert_allclose(out[1][0], boxes[2])


# -- against mediapipe's solutions --------------------------------------------------------------------

def _variants():
    img = _astronaut_bgr()
    rot = cv2.warpAffine(img, cv2.getRotationMatrix2D((256, 256), 20, 1.0), (512, 512))
    wide = cv2.copyMakeBorder(img, 0, 0, 300, 300, cv2.BORDER_CONSTANT)
    return {"astronaut": img, "rotated 20 deg": rot, "letterboxed 1112x512": wide,
            "masked": masked_astronaut()[0]}


@pytest.fixture(scope="module")
def cpu_tracker():
    return TorchFaceTracker(RunningMode.IMAGE, device="cpu")


@pytest.mark.parametrize("name", ["astronaut", "rotated 20 deg", "letterboxed 1112x512", "masked"])
def test_landmarks_match_mediapipe_face_mesh(name, cpu_tracker):
    img = _variants()[name]
    want = FaceTracker(RunningMode.IMAGE).process(img)
    got = cpu_tracker.process(img)
    assert len(want) == len(got) == 1
    nme = _nme(want[0].landmarks, got[0].landmarks)
    upper = _nme(want[0].landmarks, got[0].landmarks, upper_only=True)
    print(f"\n{name}: NME against mediapipe {nme:.4f} (upper face {upper:.4f})")
    assert got[0].source == "mesh" and upper < 0.03
    # Under a mask the mesh guesses the lower face, and its guess moves with the ROI (mediapipe's
    # own short-range detector picks a slightly different one): a looser bound there.
    assert nme < (0.06 if name == "masked" else 0.03)


def test_detections_match_mediapipe_face_detection(cpu_tracker):
    import mediapipe as mp

    img = _variants()["rotated 20 deg"]
    h, w = img.shape[:2]
    with mp.solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.5) as det:
        d = det.process(cv2.cvtColor(img, cv2.COLOR_BGR2RGB)).detections[0]
    bb = d.location_data.relative_bounding_box
    want_box = np.array([bb.xmin * w, bb.ymin * h, (bb.xmin + bb.width) * w, (bb.ymin + bb.height) * h])
    want_kp = np.array([(k.x * w, k.y * h) for k in d.location_data.relative_keypoints])
    (box, kp, score), = cpu_tracker.detect(cpu_tracker._prepare(img), [(0, 0, w, h)])
    side = want_box[2] - want_box[0]
    assert np.abs(np.array(box) - want_box).max() < 0.05 * side
    assert np.abs(kp - want_kp).max() < 0.05 * side
    assert abs(score - d.score[0]) < 0.05


def test_video_tracking_follows_mediapipe_on_the_sample_clip():
    av = pytest.importorskip("av")
    sample = Path(__file__).resolve().parents[1] / "assets" / "sample.mp4"
    with av.open(str(sample)) as c:
        frames = [f.to_ndarray(format="bgr24") for _, f in zip(range(60), c.decode(video=0))]
    ref, got = FaceTracker(RunningMode.VIDEO), TorchFaceTracker(RunningMode.VIDEO, device="cpu")
    nmes, ids = [], set()
    for f in frames:
        a, b = ref.process(f), got.process(f)
        assert len(a) == len(b) == 1
        nmes.append(_nme(a[0].landmarks, b[0].landmarks))
        ids.add(b[0].track_id)
    print(f"\nsample clip: NME against mediapipe mean {np.mean(nmes):.4f}, max {np.max(nmes):.4f}; "
          f"{got.stats}")
    assert ids == {0}                                   # one face, one track, all along
    assert np.mean(nmes) < 0.03
    assert got.stats["mesh_faces"] > len(frames) // 2    # mostly tracked from the previous landmarks


def test_gpu_unmasker_tracks_on_the_device_by_default(tmp_path):
    from stream.gpu import GpuUnmasker

    img = masked_astronaut()[0]
    with GpuUnmasker(device="cpu") as um, GpuUnmasker(device="cpu", tracker="mediapipe") as ref:
        assert type(um.tracker(RunningMode.IMAGE)) is TorchFaceTracker
        got, want = um.process(img), ref.process(img)
        assert len(got.faces) == len(want.faces) == 1
        assert got.faces[0].masked == want.faces[0].masked
        assert np.abs(got.faces[0].landmarks - want.faces[0].landmarks).mean() < 3.0
    with pytest.raises(ValueError, match="unknown tracker"):
        GpuUnmasker(device="cpu", tracker="dlib")


# -- on CUDA -------------------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible to torch")
def test_cuda_fp16_tracker_matches_cpu_fp32(cpu_tracker):
    img = _variants()["masked"]
    cuda = TorchFaceTracker(RunningMode.IMAGE, device="cuda")
    assert cuda.mesh.dtype == torch.float16
    a, b = cpu_tracker.process(img), cuda.process(img)
    assert len(a) == len(b) == 1
    nme = _nme(a[0].landmarks, b[0].landmarks)
    print(f"\ncuda fp16 vs cpu fp32: NME {nme:.5f}")
    assert nme < 0.005


def test_cuda_graphed_wrapper_runs_cpu_tensors_eagerly():
    from engines.cuda_graph import CudaGraphed

    net = torch.nn.Conv2d(3, 4, 3)
    wrapped = CudaGraphed(net)
    x = torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(wrapped(x), net(x))
    assert wrapped.out_channels == 4 and not wrapped._graphs      # attributes pass through; no graph


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible to torch")
def test_cuda_graph_replay_equals_eager_and_keeps_results_apart():
    from engines.cuda_graph import CudaGraphed
    from stream.torch_tracking import FaceMeshNet

    eager = FaceMeshNet("cuda", cuda_graphs=False)
    graphed = FaceMeshNet("cuda")
    assert isinstance(graphed.net, CudaGraphed)
    a, b = torch.rand(2, 3, 192, 192, device="cuda"), torch.rand(2, 3, 192, 192, device="cuda")
    with torch.inference_mode():
        la, pa = graphed(a)
        lb, pb = graphed(b)                          # a second replay must not overwrite the first
        ea, _ = eager(a)
        eb, _ = eager(b)
    torch.testing.assert_close(la, ea, atol=0.05, rtol=1e-3)
    torch.testing.assert_close(lb, eb, atol=0.05, rtol=1e-3)
    assert not torch.equal(la, lb)
    assert len(graphed.net._graphs) == 1


# -- export: the same networks in the engines ------------------------------------------------------------

def test_face_models_export_to_onnx_and_run_in_the_runners(tmp_path):
    pytest.importorskip("onnx")
    import json

    from engines.onnxruntime_runner import OnnxRuntimeRunner
    from engines.torch_runner import TorchRunner
    from export.onnx import main as export_main, sha256
    from stream.torch_tracking import FaceDetectorNet, FaceMeshNet

    assert export_main(["--models", "face_detector", "face_mesh", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["face_detector.json", "face_detector.onnx",
                                                           "face_mesh.json", "face_mesh.onnx"]   # no .pt
    rng = np.random.default_rng(1)
    for name, net, lo in (("face_detector", FaceDetectorNet("cpu"), -1.0), ("face_mesh", FaceMeshNet("cpu"), 0.0)):
        side = json.loads((tmp_path / f"{name}.json").read_text())
        assert side["sha256"] == sha256(tmp_path / f"{name}.onnx") and "Apache-2.0" in side["source"]
        assert max(side["parity_max_abs_err"].values()) <= side["parity_tolerance"]
        x = (rng.random((3, 3, 192, 192)) * (1 - lo) + lo).astype(np.float32)
        with OnnxRuntimeRunner(tmp_path / f"{name}.onnx", device="cpu") as ort_runner, \
                TorchRunner(tmp_path / f"{name}.onnx", device="cpu") as torch_runner:
            a, b = ort_runner.run({"image": x}), torch_runner.run({"image": x})
        assert a.keys() == b.keys() == set(side["outputs"])
        for k in a:
            np.testing.assert_allclose(a[k], b[k], atol=1e-3 * max(1.0, np.abs(a[k]).max()))
        with torch.no_grad():
            if name == "face_mesh":                  # the tracker's decoding of the same outputs
                landmarks, presence = net(torch.from_numpy(x))
                np.testing.assert_allclose(a["landmarks"], landmarks.numpy(), atol=0.01)
                np.testing.assert_allclose(1 / (1 + np.exp(-a["face_logit"][:, 0])), presence.numpy(), atol=1e-4)
            else:
                _, _, scores = net(torch.from_numpy(x))
                np.testing.assert_allclose(1 / (1 + np.exp(-np.clip(a["score_logits"][..., 0], -80, 80))), scores.numpy(),
                                           atol=1e-4)


def test_export_without_mediapipe_models_is_one_clear_error(tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnx")
    import models.face_nets as face_nets
    from export.onnx import main as export_main

    def missing(name, model_dir=None):
        raise ModelError(f"mediapipe's {name} was not found: install mediapipe==0.10.21")
    monkeypatch.setattr(face_nets, "mediapipe_model_path", missing)
    assert export_main(["--models", "face_mesh", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: mediapipe's")
    assert not any(tmp_path.iterdir())
