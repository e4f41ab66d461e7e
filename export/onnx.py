"""Export Unmask's networks to ONNX with sidecars and a parity check.

    python -m export.onnx [--models analyser inpainter_fast] [--out models/weights]
                          [--checkpoints runs] [--simplify] [--real-batch 4]
    python -m export.onnx --models face_detector face_mesh      # mediapipe's networks, for the engines

Each network is loaded from its training checkpoint (runs/<name>/last.pt,
`weights_only=True`), exported with opset 17, named inputs / outputs and a
dynamic batch (faces) dimension, checked with `onnx.checker`, compared with
PyTorch on random and on real-looking inputs (max abs error; fp32 must agree
within 1e-4), and described by `<name>.json` next to it: input sizes,
normalisation, output meanings, sha256, parity.

Next to `<name>.onnx` goes `<name>.pt`: the plain state dict (tensors only,
loadable with `torch.load(..., weights_only=True)`) from which
`engines.torch_runner.TorchRunner` rebuilds the network; the sidecar records
its sha256 so a runner never pairs weights with another export.

`face_detector` and `face_mesh` are mediapipe's full-range BlazeFace and 468-point face mesh,
rebuilt in torch from the .tflite files of the installed mediapipe wheel (models.tflite_graph) and
exported the same way, so TensorRT (export.build_engines) compiles them like our own networks. They
need no checkpoint and get no .pt: the torch path reads the .tflite itself. They are Apache-2.0
models by Google; the exports are made on the user's machine and not shipped.

`--state-dicts DIR` re-exports from the plain state dicts `DIR/<name>.pt` (e.g. models/weights
itself, after a change to a network's graph that keeps its weights). The colour corrections fitted on
the previous `<name>.onnx` in `--out` (models.colour: tied to its sha256) are carried over to the new
file only when the new graph reproduces the previous file's outputs on the real-looking faces within
the parity tolerance; the previous sha256 is kept beside the new one. Otherwise they stay tied to the
old file, and the stream runs the new one uncorrected (with a warning) until they are refitted.

`--simplify` runs onnx-simplifier when it is installed (pip install onnxsim);
otherwise it says so and exports the graph unsimplified.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from models.checkpoints import file_sha256 as sha256
from models.errors import UnmaskError
from models.spec import CONTRACTS as SPEC_CONTRACTS
from models.spec import FACE_MODELS, MEDIAPIPE_NETS, TRAINING_HOLE_DILATE_PX, WEIGHTS_DIR, dilate_hole, load_canonical_face

ROOT = Path(__file__).resolve().parents[1]
OPSET = 17
PARITY_TOL = 1e-4

# The I/O contract of every network (typed, once, in models.spec), as the sidecars record it.
CONTRACTS = {name: c.describe() for name, c in SPEC_CONTRACTS.items()}

SIMPLIFY_MISSING = "onnxsim is not installed (pip install onnxsim): exporting without simplification"


def example_inputs(name: str, batch: int = 2, seed: int = 0):
    import torch
    g = torch.Generator().manual_seed(seed)
    image = SPEC_CONTRACTS[name].inputs[0]
    if name in FACE_MODELS:
        x = torch.rand(image.with_batch(batch), generator=g)
        return (x * 2 - 1,) if name == "face_detector" else (x,)
    if name == "analyser":
        return (torch.rand(image.with_batch(batch), generator=g),)
    size = image.shape[-1]
    hole = (torch.rand(batch, 1, size, size, generator=g) > 0.5).float()
    return (torch.rand(batch, 3, size, size, generator=g), hole,
            torch.rand(batch, 1, size, size, generator=g), torch.rand(batch, generator=g))


# -- real-looking inputs ----------------------------------------------------------------------

_LEFT_EYE = [33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246]
_RIGHT_EYE = [263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466]
_BROWS = ([70, 63, 105, 66, 107], [336, 296, 334, 293, 300])


def synthetic_faces(count: int = 4, seed: int = 0) -> list[dict]:
    """Real-looking aligned masked faces, drawn from the canonical mesh (no data set needed).

    Each sample: `crop` (256x256x3 uint8 BGR canonical crop wearing a covering), `landmarks`
    (468x2 canonical px), `covering` (256x256 uint8 0/1) and `gender` (0, 0.5 or 1). Smooth skin
    shading, eyes, brows, lips, hair, a textured covering, sensor noise: the statistics of a
    real crop (large flat regions, hard covering edges), unlike uniform noise.
    """
    import cv2
    from models.spec import CANONICAL_SIZE, JAW, LIPS_INNER, LIPS_OUTER, NOSE_BOTTOM, NOSE_LINE

    canon = load_canonical_face().astype(np.float64)
    rng = np.random.default_rng(seed)
    S = CANONICAL_SIZE
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32) / S
    out = []
    for _ in range(count):
        c = np.array([S / 2, S / 2])
        ang = np.deg2rad(rng.uniform(-6, 6))
        sc = rng.uniform(0.94, 1.06)
        rot = sc * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
        lm = (canon - c) @ rot.T + c + rng.uniform(-4, 4, 2)
        pts = lambda idx: np.round(lm[idx] * 4).astype(np.int32)  # noqa: E731  (shift=2 sub-pixel)

        bg = rng.uniform(40, 220, 3)
        grad = rng.uniform(-60, 60, 3)
        img = bg[None, None] + grad[None, None] * (xx[..., None] * rng.uniform(0.3, 1) + yy[..., None] * 0.5)
        img = img.astype(np.float32)
        tone = rng.uniform(0, 1)  # dark .. light skin, BGR
        skin = (np.array([55, 75, 105]) + tone * 130 + rng.uniform(-8, 8, 3)).astype(np.float32)
        face = np.zeros((S, S), np.uint8)
        cv2.fillConvexPoly(face, cv2.convexHull(pts(list(range(468)))), 1, cv2.LINE_AA, shift=2)
        cx, cy = lm.mean(0) / S
        shade = 1.08 - 0.9 * ((xx - cx) ** 2 + 0.6 * (yy - cy) ** 2)
        light = 1 + rng.uniform(-0.25, 0.25) * (xx - cx)
        face_f = cv2.GaussianBlur(face.astype(np.float32), (7, 7), 2)[..., None]
        img = img * (1 - face_f) + (skin * (shade * light)[..., None]) * face_f
        hair = np.zeros((S, S), np.uint8)
        top = lm[:, 1].min()
        cv2.ellipse(hair, (int(lm[:, 0].mean()), int(top + 6)), (int(np.ptp(lm[:, 0]) * 0.55), 26), 0, 180, 360,
                    1, -1)
        img[hair > 0] = rng.uniform(10, 90, 3)
        for eye in (_LEFT_EYE, _RIGHT_EYE):
            cv2.fillPoly(img, [pts(eye)], (235, 235, 235), cv2.LINE_AA, shift=2)
            centre = lm[eye].mean(0)
            iris = rng.uniform(20, 110, 3)
            cv2.circle(img, tuple(int(v) for v in centre), 4, tuple(float(v) for v in iris), -1, cv2.LINE_AA)
        for brow in _BROWS:
            cv2.polylines(img, [pts(brow)], False, tuple(float(v) for v in skin * 0.35), 3, cv2.LINE_AA, shift=2)
        lip = skin * np.array([0.75, 0.7, 1.05], np.float32)
        cv2.fillPoly(img, [pts(LIPS_OUTER)], tuple(float(v) for v in np.clip(lip, 0, 255)), cv2.LINE_AA, shift=2)
        cv2.fillPoly(img, [pts(LIPS_INNER)], (40, 30, 60), cv2.LINE_AA, shift=2)
        cv2.polylines(img, [pts(NOSE_LINE), pts(NOSE_BOTTOM)], False, tuple(float(v) for v in skin * 0.8), 2,
                      cv2.LINE_AA, shift=2)
        # The covering: from the nose bridge over the cheeks to under the chin.
        cover_pts = np.concatenate([lm[JAW[2:-2]], lm[[454, 356, 6, 127, 234]]]) \
            + rng.uniform(-2, 2, (len(JAW) - 4 + 5, 2))
        covering = np.zeros((S, S), np.uint8)
        cv2.fillConvexPoly(covering, cv2.convexHull(np.round(cover_pts * 4).astype(np.int32)), 1, cv2.LINE_AA,
                           shift=2)
        cover_col = rng.choice([[235, 225, 215], [200, 170, 120], [40, 40, 45], [160, 120, 220]]) \
            + rng.uniform(-15, 15, 3)
        weave = 1 + 0.06 * np.sin(xx * S * rng.uniform(0.8, 1.6)) * np.sin(yy * S * 0.9)
        folds = 1 - 0.12 * np.abs(np.sin((yy - cy) * rng.uniform(14, 22)))
        cov_img = cover_col[None, None] * (weave * folds * shade.clip(0.6, 1.1))[..., None]
        img[covering > 0] = cov_img[covering > 0]
        img = cv2.GaussianBlur(img, (3, 3), 0.7) + rng.normal(0, 3.0, img.shape)
        out.append({"crop": np.clip(img, 0, 255).astype(np.uint8), "landmarks": lm.astype(np.float32),
                    "covering": covering, "gender": float(rng.choice([0.0, 0.5, 1.0]))})
    return out


def real_inputs_np(name: str, batch: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """Contract-shaped float32 inputs for network `name` made from `synthetic_faces`."""
    import cv2
    from models.spec import ANALYSER, draw_landmark_map, window_matrix

    faces = synthetic_faces(batch, seed)
    to_chw = lambda im: np.ascontiguousarray(im.transpose(2, 0, 1), np.float32) / 255.0  # noqa: E731
    if name == "analyser":
        n = ANALYSER["input_size"]
        return {"image": np.stack([to_chw(cv2.resize(f["crop"], (n, n), interpolation=cv2.INTER_AREA))
                                   for f in faces])}
    if name in FACE_MODELS:       # RGB; the detector's range is [-1, 1]
        n = MEDIAPIPE_NETS[name]["input_size"]
        crops = np.stack([to_chw(cv2.resize(f["crop"], (n, n), interpolation=cv2.INTER_AREA)[..., ::-1])
                          for f in faces])
        return {"image": crops * 2 - 1 if name == "face_detector" else crops}
    if name not in CONTRACTS:
        raise KeyError(name)
    size = SPEC_CONTRACTS[name].inputs[0].shape[-1]
    m = window_matrix(size)
    images, holes, maps, genders = [], [], [], []
    for f in faces:
        win = cv2.warpAffine(f["crop"], m, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)
        cov = cv2.warpAffine(f["covering"], m, (size, size), flags=cv2.INTER_NEAREST)
        hole = dilate_hole(cov, size, TRAINING_HOLE_DILATE_PX)   # as the training data's holes
        lm = f["landmarks"] @ m[:, :2].T + m[:, 2]
        images.append(to_chw(win))
        holes.append(hole[None].astype(np.float32))
        maps.append(draw_landmark_map(lm, size)[None])
        genders.append(f["gender"])
    return {"image": np.stack(images), "hole": np.stack(holes), "landmark_map": np.stack(maps),
            "gender": np.asarray(genders, np.float32)}


def real_inputs(name: str, batch: int = 4, seed: int = 0):
    """`real_inputs_np` as the tuple of torch tensors `export_model(real_inputs=...)` takes."""
    import torch
    d = real_inputs_np(name, batch, seed)
    return tuple(torch.from_numpy(d[k]) for k in CONTRACTS[name]["inputs"])


# -- files ------------------------------------------------------------------------------------

def _replace_atomically(tmp: Path, path: Path) -> None:
    os.replace(tmp, path)


def save_state_dict(model, path: Path) -> str:
    """Write the model's state dict as plain CPU tensors (torch.load(..., weights_only=True) reads it back);
    returns its sha256. The write is atomic."""
    import torch
    path = Path(path)
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    _replace_atomically(tmp, path)
    return sha256(path)


def maybe_simplify(model_proto):
    """(simplified model, None) with onnxsim; (the model unchanged, a one-line reason) otherwise."""
    try:
        import onnxsim
    except ImportError:
        return model_proto, SIMPLIFY_MISSING
    try:
        simplified, ok = onnxsim.simplify(model_proto)
    except Exception as e:  # a failed simplification must not cost the export
        return model_proto, f"onnxsim failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); " \
                            f"keeping the unsimplified graph"
    if not ok:
        return model_proto, "onnxsim could not validate the simplified graph; keeping the unsimplified graph"
    return simplified, None


def export_model(name: str, model, path: Path, real_inputs=None, simplify: bool = False) -> dict:
    """Export `model` (eval mode, CPU) to `path`; returns the sidecar dict it wrote.

    Also writes `<path stem>.pt` (plain state dict). `simplify=True` runs onnxsim when installed
    (the parity check then covers the simplified graph).
    """
    import onnx
    import onnxruntime as ort
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    contract = CONTRACTS[name]
    in_names, out_names = list(contract["inputs"]), list(contract["outputs"])
    dyn = {n: {0: "faces"} for n in in_names + out_names}
    args = example_inputs(name)
    tmp = path.with_suffix(".onnx.tmp")
    with torch.no_grad():
        torch.onnx.export(model, args, str(tmp), opset_version=OPSET, input_names=in_names,
                          output_names=out_names, dynamic_axes=dyn, dynamo=False)
    proto = onnx.load(str(tmp))
    onnx.checker.check_model(proto)
    simplified = False
    if simplify:
        proto, why = maybe_simplify(proto)
        if why:
            print(f"{name}: {why}", file=sys.stderr)
        else:
            onnx.checker.check_model(proto)
            onnx.save(proto, str(tmp))
            simplified = True
    sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    parity = {}
    cases = {"random": args}
    if real_inputs is not None:
        cases["real"] = real_inputs
    for case, inputs in cases.items():
        with torch.no_grad():
            ref = model(*inputs)
        ref = ref if isinstance(ref, (tuple, list)) else (ref,)
        got = sess.run(out_names, {n: t.numpy() for n, t in zip(in_names, inputs)})
        parity[case] = max(float(np.abs(r.numpy() - o).max()) for r, o in zip(ref, got))
        scale = max(max(float(np.abs(r.numpy()).max()) for r in ref), 1.0)
    # Our networks output [0, 1] values; mediapipe's output pixels (up to ~200): 1e-4 relative to the
    # outputs' range, i.e. float32 rounding, not a looser check.
    tolerance = PARITY_TOL * (scale if name in FACE_MODELS else 1.0)
    if max(parity.values()) > tolerance:
        tmp.unlink()
        raise RuntimeError(f"{name}: ONNX Runtime differs from PyTorch by {parity} (> {tolerance:g})")
    tmp.replace(path)
    sidecar = {"name": name, "opset": OPSET, **contract,
               "normalisation": SPEC_CONTRACTS[name].normalisation,
               "sha256": sha256(path), "parity_max_abs_err": parity,
               "parity_tolerance": tolerance,
               "params": int(sum(p.numel() for p in model.parameters())), "simplified": simplified}
    if name in FACE_MODELS:
        sidecar.update(normalisation=SPEC_CONTRACTS[name].normalisation,
                       params=int(sum(b.numel() for b in model.buffers())),
                       source=f"mediapipe 0.10.21 modules/{MEDIAPIPE_NETS[name]['file']} (Apache-2.0, Google)")
    else:
        pt_path = path.with_suffix(".pt")
        sidecar["state_dict"] = {"file": pt_path.name, "sha256": save_state_dict(model, pt_path)}
    side_tmp = path.with_suffix(".json.tmp")
    side_tmp.write_text(json.dumps(sidecar, indent=2) + "\n")
    _replace_atomically(side_tmp, path.with_suffix(".json"))
    return sidecar


def load_face_model(name: str, model_dir: Path | None = None):
    """mediapipe's network `name` as a torch module (models.face_nets; imported here: it needs torch)."""
    from models.face_nets import load_face_net
    return load_face_net(name, model_dir)


def load_from_state_dict(name: str, folder: Path):
    """`folder/<name>.pt` (a plain state dict, as export_model writes it) in its network."""
    import torch
    from models.networks import build
    model = build(name)
    model.load_state_dict(torch.load(Path(folder) / f"{name}.pt", map_location="cpu", weights_only=True))
    return model.eval()


def previous_outputs(path: Path, inputs) -> list[np.ndarray] | None:
    """The outputs of the ONNX file at `path` (before it is replaced) on `inputs`; None without one."""
    if not Path(path).exists():
        return None
    import onnxruntime as ort
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {i.name: t.numpy() for i, t in zip(sess.get_inputs(), inputs)})


def carry_colour_ties(onnx_path: Path, old_sha: str, new_sha: str) -> list[Path]:
    """Re-tie the colour corrections beside `onnx_path` that were fitted on the file with `old_sha` to
    the re-exported file (`new_sha`): the caller has checked that both compute the same function.
    Returns the files rewritten."""
    from models.colour import colour_path
    done = []
    for path in (colour_path(onnx_path), Path(onnx_path).with_name("reference_colour.json")):
        if not path.exists():
            continue
        spec = json.loads(path.read_text())
        if spec.get("inpainter") != Path(onnx_path).name or spec.get("inpainter_sha256") != old_sha:
            continue
        spec["reexported_from"] = spec.get("reexported_from", []) + [old_sha]
        spec["inpainter_sha256"] = new_sha
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(spec, indent=1) + "\n")       # as training.fit_colour writes them
        _replace_atomically(tmp, path)
        done.append(path)
    return done


def load_from_checkpoint(name: str, checkpoints: Path | None = None):
    import torch
    from models.networks import build
    ckpt = Path(checkpoints or ROOT / "runs") / name / "last.pt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    model = build(name)
    model.load_state_dict(state["model"] if "model" in state else state["G"])
    return model.eval()


def _fmt(parity: dict) -> str:
    return ", ".join(f"{k} {v:.2e}" for k, v in parity.items())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description="Export Unmask's networks to ONNX (+ .pt state dict + .json sidecar).")
    ap.add_argument("--models", nargs="+", default=["analyser", "inpainter_fast"])
    ap.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    ap.add_argument("--checkpoints", type=Path, default=ROOT / "runs",
                    help="folder holding <model>/last.pt (default: runs/)")
    ap.add_argument("--state-dicts", type=Path, default=None, metavar="DIR",
                    help="re-export from the plain state dicts DIR/<model>.pt instead of the checkpoints "
                         "(the colour corrections in --out follow when the outputs match the previous export)")
    ap.add_argument("--simplify", action="store_true", help="simplify the graph with onnxsim when installed")
    ap.add_argument("--real-batch", type=int, default=4,
                    help="number of real-looking faces for the parity check (0: random inputs only)")
    args = ap.parse_args(argv)
    for name in args.models:
        if name not in CONTRACTS:
            print(f"error: unknown model {name!r} (choose from {', '.join(CONTRACTS)})", file=sys.stderr)
            return 2
        ckpt = (args.state_dicts / f"{name}.pt") if args.state_dicts else args.checkpoints / name / "last.pt"
        if name not in FACE_MODELS and not ckpt.exists():
            how = "" if args.state_dicts else "; train it first (python -m training.train)"
            print(f"error: no {'state dict' if args.state_dicts else 'checkpoint'} {ckpt}{how}", file=sys.stderr)
            return 2
    for name in args.models:
        real = real_inputs(name, args.real_batch) if args.real_batch > 0 else None
        path = args.out / f"{name}.onnx"
        try:
            if name in FACE_MODELS:
                model = load_face_model(name)
            elif args.state_dicts:
                model = load_from_state_dict(name, args.state_dicts)
            else:
                model = load_from_checkpoint(name, args.checkpoints)
            check = real if real is not None else example_inputs(name)
            before = previous_outputs(path, check)
            old_sha = sha256(path) if before is not None else None
            side = export_model(name, model, path, real_inputs=real, simplify=args.simplify)
        except (RuntimeError, UnmaskError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        if before is not None and old_sha != side["sha256"]:
            after = previous_outputs(path, check)
            diff = max(float(np.abs(a - b).max()) for a, b in zip(before, after))
            if diff <= side["parity_tolerance"]:
                for tied in carry_colour_ties(path, old_sha, side["sha256"]):
                    print(f"{name}: {tied.name} follows the new export (outputs within {diff:.2e} of the previous one)")
            else:
                print(f"{name}: outputs differ from the previous export by {diff:.2e}: its colour corrections stay "
                      f"tied to that file; refit them (python -m training.fit_colour)", file=sys.stderr)
        extra = f"{name}.json" if name in FACE_MODELS else f"{name}.pt, {name}.json"
        print(f"{name}: {args.out / (name + '.onnx')} (+ {extra}) "
              f"parity max abs err: {_fmt(side['parity_max_abs_err'])} (tolerance {side['parity_tolerance']:.3g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
