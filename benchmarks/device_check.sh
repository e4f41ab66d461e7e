#!/bin/bash
# The device checks of the GPU path, as run on a lent H200 (benchmarks/reports/2026-11-30-h200-gpu_path.md).
#
# That machine has torch with CUDA, onnxruntime and OpenCV but no mediapipe, tflite or PyAV, and no
# network: carry the wheels in an ignored folder .devcarry/ (under 64 MiB with the repository):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .devcarry mediapipe==0.10.21 'protobuf>=4.25.3,<5' tflite numpy==1.26.4 numba llvmlite
#   cp benchmarks/device_check.sh .devcarry/ && echo /.devcarry/ >> .git/info/exclude
# and run `bash .devcarry/device_check.sh` there with .devcarry carried. Results go to $OUT.
# ENGINES=1 also runs the engines' GPU tests (TorchRunner vs ONNX Runtime) in their own process:
# they import onnx, whose protobuf 6 cannot share a process with mediapipe's protobuf 4.
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."   # the repository root (the script runs from .devcarry/)
W=.devcarry
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site $W/mediapipe-*.whl $W/tflite-*.whl 2>&1 | tail -2
# numba: the own-face path's triangle raster (stream.rasterise), which the GPU path renders on the CPU
ls $W/numba-*.whl >/dev/null 2>&1 && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site $W/numba-*.whl $W/llvmlite-*.whl 2>&1 | tail -2
# mediapipe's generated protobuf code needs protobuf 4; the image's onnx needs its own (6): kept apart
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/pb $W/protobuf-*.whl 2>&1 | tail -2
export PYTHONPATH=/tmp/pb:/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import numpy, torch, cv2, onnxruntime; print('numpy', numpy.__version__, 'torch', torch.__version__, 'cv2', cv2.__version__, 'ort', onnxruntime.__version__, torch.cuda.get_device_name())"
MPCHECK="import mediapipe as mp, numpy as np; m=mp.solutions.face_mesh.FaceMesh(static_image_mode=True); m.process(np.zeros((64,64,3),np.uint8)); print('mediapipe ok', mp.__version__)"
if ! python3 -c "$MPCHECK" 2>$OUT/mp_err.txt; then
  tail -3 $OUT/mp_err.txt
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/np $W/numpy-*.whl 2>&1 | tail -2
  export PYTHONPATH=/tmp/np:/tmp/pb:/tmp/site:$PWD
  if ! python3 -c "$MPCHECK" 2>>$OUT/mp_err.txt; then
    echo "mediapipe unusable here: torch tracker only"; tail -3 $OUT/mp_err.txt
    export PYTHONPATH=/tmp/pb:/tmp/site:$PWD
  fi
fi
python3 - <<'PY'
import zipfile, glob
z = zipfile.ZipFile(glob.glob(".devcarry/mediapipe-*.whl")[0])
for n in ("face_detection/face_detection_full_range_sparse.tflite", "face_landmark/face_landmark.tflite"):
    z.extract("mediapipe/modules/" + n, "/tmp/mpmods")
PY
export UNMASK_MEDIAPIPE_MODULES=/tmp/mpmods/mediapipe/modules
timeout ${PYTEST_S:-200} python3 -m pytest -q -m gpu -p no:cacheprovider -s tests/test_gpu_path.py tests/test_torch_tracking.py > $OUT/pytest_gpu.txt 2>&1
echo "pytest exit $?"; grep -v "^W0000\|^I0000" $OUT/pytest_gpu.txt | tail -12
[ -n "$ENGINES" ] && PYTHONPATH=/tmp/site:$PWD timeout 120 python3 -m pytest -q -m gpu -p no:cacheprovider -s tests/test_engines.py > $OUT/pytest_engines.txt 2>&1
echo "pytest engines exit $?"; tail -6 $OUT/pytest_engines.txt
timeout ${BENCH_S:-260} python3 -m benchmarks.gpu_path --device cuda --frames ${FRAMES:-150} --warmup 20 --out $OUT/bench $BENCH_ARGS 2>&1 | grep -v "^W0000\|^I0000" | tail -45
echo "bench exit ${PIPESTATUS[0]}"
