"""Generates assets/sample.mp4, a redistributable 6 s 1280x720 H.264/AAC demo clip of scikit-image's public-domain astronaut, unmasked for the first second and then wearing a MIT-licensed MaskTheFace surgical mask, drifting, zooming and tilting over a soft background with a quiet 440 Hz tone."""
# Usage: python assets/make_sample.py [--out assets/sample.mp4] [--overwrite] [--templates DIR_OR_TAR]
#
# Every parameter below is fixed, so a run reproduces the clip (byte-identical
# with the same PyAV / x264 / mediapipe builds). The mask is placed with a
# homography from the template's six anchor points (a..f in masks.cfg) to six
# mediapipe face-mesh points of the astronaut and shaded by the face's
# low-frequency lighting. Sources and licences: assets/LICENSES.md.
from __future__ import annotations

import argparse
import configparser
import sys
import tarfile
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

ASSETS = Path(__file__).resolve().parent
DEFAULT_OUT = ASSETS / "sample.mp4"
# Bundled copy of the one MaskTheFace template used (plus its cfg excerpt and
# MIT LICENSE); --templates may point at the original MaskTheFace tar instead.
BUNDLED_TEMPLATES = ASSETS / "mask_templates"
TEMPLATE = "surgical_blue"

# -- clip parameters (documented in the README / tests/test_sample_asset.py) --
WIDTH, HEIGHT = 1280, 720
FPS = 25
N_FRAMES = 150                 # 6.0 s
UNMASKED_FRAMES = 25           # frames 0..24 (first second) unmasked, 25..149 masked (hard cut)
CRF, PRESET, GOP = 23, "slow", 50
ENCODER_THREADS = 2            # fixed: x264 output depends on the thread count
AUDIO_RATE = 44100
TONE_HZ, TONE_AMP, FADE_S = 440.0, 0.1, 0.05   # -20 dBFS sine, 50 ms fade in / out
AUDIO_BITRATE = 64_000

# Working canvas: the 512 px astronaut upscaled 2x; output pixels per canvas
# pixel at zoom 1 (so the face, ~92 px wide in the original, is ~220 px wide).
CANVAS_SCALE = 2
BASE_SCALE = 1.2
ZOOM_RANGE = 0.2               # zoom 1 +- 0.2 (0.8 .. 1.2)
DRIFT_PX = 200                 # face centre x = 640 +- 200
BOB_PX = 15
TILT_DEG = 5.0
SHADE_STRENGTH = 0.5
TOP_PAD = 160                  # canvas rows added above the photo so the vignette is not cut

# MaskTheFace anchors a..f as mediapipe face-mesh points (means of the listed).
ANCHORS = {"a": [234, 93], "b": [197], "c": [454, 323],
           "d": [172, 136], "e": [152], "f": [397, 365]}


def fail(msg: str) -> None:
    print(f"make_sample: error: {msg}", file=sys.stderr)
    sys.exit(2)


# -- inputs ----------------------------------------------------------------
def astronaut_bgr() -> np.ndarray:
    from skimage import data
    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def face_landmarks(bgr: np.ndarray) -> np.ndarray:
    """468 mediapipe face-mesh points (x, y in pixels) of the single face in `bgr`."""
    import mediapipe as mp
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1) as fm:
        res = fm.process(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    if not res.multi_face_landmarks:
        fail("mediapipe found no face on the astronaut image")
    h, w = bgr.shape[:2]
    return np.float64([[p.x * w, p.y * h] for p in res.multi_face_landmarks[0].landmark])


def load_template(source: Path, name: str = TEMPLATE) -> tuple[np.ndarray, np.ndarray]:
    """(BGRA template, 6x2 anchors a..f) from a MaskTheFace tree or its .tar."""
    if source.is_file():
        with tempfile.TemporaryDirectory() as tmp:
            with tarfile.open(source) as tar:
                tar.extractall(tmp, filter="data")
            return load_template(Path(tmp), name)
    cfgs = sorted(source.rglob("masks.cfg"))
    if not cfgs:
        fail(f"no masks/masks.cfg under {source}")
    cfg = configparser.ConfigParser()
    cfg.read(cfgs[0])
    if name not in cfg:
        fail(f"template [{name}] not in {cfgs[0]}")
    sec = cfg[name]
    path = cfgs[0].parent.parent / sec["template"].strip()   # cfg paths start with masks/
    rgba = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if rgba is None or rgba.ndim != 3 or rgba.shape[2] != 4:
        fail(f"cannot read RGBA template {path}")
    anchors = np.float64([[float(v) for v in sec[f"mask_{k}"].split(",")] for k in "abcdef"])
    return rgba, anchors


# -- the masked portrait -----------------------------------------------------
def put_on_mask(face: np.ndarray, lm: np.ndarray, rgba: np.ndarray,
                anchors: np.ndarray) -> np.ndarray:
    """`face` (BGR uint8) wearing the template, mapped by a homography a..f -> mesh points."""
    dst = np.float64([lm[ANCHORS[k]].mean(0) for k in "abcdef"])
    # Pre-shrink the (~600 px) template to about its final size with area
    # averaging so the perspective warp does not alias; premultiply alpha so
    # transparent pixels do not bleed colour into the edge.
    f = np.linalg.norm(dst[2] - dst[0]) / np.linalg.norm(anchors[2] - anchors[0])
    small = cv2.resize(rgba, None, fx=f, fy=f, interpolation=cv2.INTER_AREA).astype(np.float32)
    fx, fy = small.shape[1] / rgba.shape[1], small.shape[0] / rgba.shape[0]
    src = (anchors + 0.5) * [fx, fy] - 0.5
    small[..., :3] *= small[..., 3:] / 255.0
    hom, _ = cv2.findHomography(src, dst)       # least squares over the six pairs
    h, w = face.shape[:2]
    warped = cv2.warpPerspective(small, hom, (w, h), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    alpha = np.clip(warped[..., 3] / 255.0, 0, 1)[..., None]
    colour = warped[..., :3]
    # Shade the mask with the face's low-frequency lighting (relative to its mean under the mask).
    face_w = np.linalg.norm(lm[454] - lm[234])
    gray = cv2.cvtColor(face, cv2.COLOR_BGR2GRAY).astype(np.float32)
    light = cv2.GaussianBlur(gray, (0, 0), face_w / 6)
    light /= max(float(light[alpha[..., 0] > 0.5].mean()), 1.0)
    shade = (1 - SHADE_STRENGTH) + SHADE_STRENGTH * np.clip(light, 0.6, 1.3)
    out = face.astype(np.float32) * (1 - alpha) + colour * shade[..., None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def portrait_alpha(shape: tuple[int, int], centre: np.ndarray, axes: tuple[float, float],
                   feather: float) -> np.ndarray:
    """Soft elliptical vignette (float32 0..1) framing head and shoulders."""
    a = np.zeros(shape, np.float32)
    cv2.ellipse(a, (int(centre[0]), int(centre[1])), (int(axes[0]), int(axes[1])), 0, 0, 360,
                1.0, -1, cv2.LINE_AA)
    return cv2.GaussianBlur(a, (0, 0), feather)


def pad_top(img: np.ndarray) -> np.ndarray:
    out = cv2.copyMakeBorder(img, TOP_PAD, 0, 0, 0, cv2.BORDER_REPLICATE)
    band = out[:TOP_PAD + 8].astype(np.float32)
    smooth = cv2.GaussianBlur(band, (0, 0), sigmaX=25, sigmaY=4)
    w = np.clip((TOP_PAD + 8 - np.arange(TOP_PAD + 8)) / 16.0, 0, 1)[:, None, None]
    out[:TOP_PAD + 8] = np.rint(smooth * w + band * (1 - w)).astype(np.uint8)
    return out


def background() -> np.ndarray:
    """A static, softly mottled blue-grey studio backdrop (BGR uint8)."""
    rng = np.random.default_rng(7)
    y = np.linspace(0, 1, HEIGHT, dtype=np.float32)[:, None, None]
    x = np.linspace(-1, 1, WIDTH, dtype=np.float32)[None, :, None]
    top, bottom = np.float32([150, 140, 128]), np.float32([98, 88, 80])   # BGR
    img = top * (1 - y) + bottom * y
    img = img * (1 - 0.18 * x ** 2)                                        # darker edges
    blotch = cv2.resize(rng.normal(0, 1, (9, 16)).astype(np.float32), (WIDTH, HEIGHT),
                        interpolation=cv2.INTER_CUBIC)
    img = img + 7 * blotch[..., None]
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def motion(i: int) -> tuple[float, float, float, float]:
    """(face centre x, y, zoom, tilt in degrees) at frame i: smooth, periodic, deterministic."""
    t = i / FPS
    x = WIDTH / 2 + DRIFT_PX * np.sin(2 * np.pi * t / 6.0)
    y = HEIGHT / 2 - 10 + BOB_PX * np.sin(2 * np.pi * t / 3.0 + 0.5)
    zoom = 1.0 + ZOOM_RANGE * np.sin(2 * np.pi * t / 4.0)
    tilt = TILT_DEG * np.sin(2 * np.pi * t / 3.0)
    return float(x), float(y), float(zoom), float(tilt)


def frame_matrix(i: int, face_centre: np.ndarray) -> np.ndarray:
    """2x3 affine canvas -> output frame for frame i."""
    x, y, zoom, tilt = motion(i)
    m = cv2.getRotationMatrix2D((float(face_centre[0]), float(face_centre[1])), tilt,
                                BASE_SCALE * zoom)
    m[:, 2] += [x - face_centre[0], y - face_centre[1]]
    return m


# -- audio -----------------------------------------------------------------
def tone() -> np.ndarray:
    n = round(N_FRAMES / FPS * AUDIO_RATE)
    t = np.arange(n) / AUDIO_RATE
    env = np.minimum(1.0, np.minimum(t, t[-1] - t) / FADE_S)
    return (TONE_AMP * env * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)


# -- main ------------------------------------------------------------------
def render(out_path: Path, templates: Path) -> None:
    src = astronaut_bgr()
    lm_src = face_landmarks(src)
    # Work on a 2x (Lanczos) upscale so the per-frame warps mostly downsample.
    s = CANVAS_SCALE
    canvas = cv2.resize(src, None, fx=s, fy=s, interpolation=cv2.INTER_LANCZOS4)
    lm = (lm_src + 0.5) * s - 0.5
    rgba, anchors = load_template(templates)
    masked = put_on_mask(canvas, lm, rgba, anchors)
    # The hair nearly touches the photo's top edge: extend the backdrop upwards
    # (top row replicated, smoothed sideways) so the vignette fades out there too.
    canvas, masked = pad_top(canvas), pad_top(masked)
    lm = lm + [0, TOP_PAD]

    # Head-and-shoulders framing: an ellipse around the face reaching down to the chest.
    face_lo, face_hi = lm.min(0), lm.max(0)
    face_w = face_hi[0] - face_lo[0]
    face_centre = lm.mean(0)
    hair_top = face_lo[1] - 0.6 * face_w             # the mesh stops at the hairline
    centre = np.float64([face_centre[0], face_centre[1] + 0.55 * face_w])
    vignette = portrait_alpha(canvas.shape[:2], centre, (1.45 * face_w, 1.9 * face_w),
                              feather=0.12 * face_w)
    # Face box that must stay inside every frame: mesh extent widened by 8 %, up to the hair.
    box = np.float64([[face_lo[0] - 0.08 * face_w, hair_top],
                      [face_hi[0] + 0.08 * face_w, hair_top],
                      [face_lo[0] - 0.08 * face_w, face_hi[1] + 0.08 * face_w],
                      [face_hi[0] + 0.08 * face_w, face_hi[1] + 0.08 * face_w]])

    bg = background().astype(np.float32)
    samples = tone()

    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = out_path.with_name(out_path.name + ".part")
    with av.open(str(tmp_path), "w", format="mp4",
                 options={"movflags": "+faststart"}) as container:
        vs = container.add_stream("libx264", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        vs.codec_context.gop_size = GOP
        vs.codec_context.color_range = 1       # limited (MPEG)
        vs.codec_context.colorspace = 1        # BT.709 matrix, primaries, transfer
        vs.codec_context.color_primaries = 1
        vs.codec_context.color_trc = 1
        vs.options = {"crf": str(CRF), "preset": PRESET, "threads": str(ENCODER_THREADS)}
        aus = container.add_stream("aac", rate=AUDIO_RATE, layout="mono")
        aus.bit_rate = AUDIO_BITRATE

        for i in range(N_FRAMES):
            m = frame_matrix(i, face_centre)
            corners = box @ m[:, :2].T + m[:, 2]
            if (corners.min() < 0 or corners[:, 0].max() >= WIDTH
                    or corners[:, 1].max() >= HEIGHT):
                fail(f"frame {i}: face box leaves the frame ({corners.round(0).tolist()})")
            portrait = masked if i >= UNMASKED_FRAMES else canvas
            fg = cv2.warpAffine(portrait, m, (WIDTH, HEIGHT), flags=cv2.INTER_CUBIC,
                                borderMode=cv2.BORDER_REFLECT101).astype(np.float32)
            a = cv2.warpAffine(vignette, m, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)[..., None]
            img = np.clip(np.rint(fg * a + bg * (1 - a)), 0, 255).astype(np.uint8)
            vf = av.VideoFrame.from_ndarray(img, format="bgr24")
            vf = vf.reformat(format="yuv420p", dst_colorspace="ITU709", dst_color_range="MPEG")
            vf.pts, vf.time_base = i, Fraction(1, FPS)
            for packet in vs.encode(vf):
                container.mux(packet)
        for packet in vs.encode():
            container.mux(packet)

        chunk = 1024
        for start in range(0, len(samples), chunk):
            af = av.AudioFrame.from_ndarray(samples[None, start:start + chunk],
                                            format="fltp", layout="mono")
            af.sample_rate, af.pts = AUDIO_RATE, start
            af.time_base = Fraction(1, AUDIO_RATE)
            for packet in aus.encode(af):
                container.mux(packet)
        for packet in aus.encode():
            container.mux(packet)
    tmp_path.replace(out_path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .mp4 (default: %(default)s)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    ap.add_argument("--templates", type=Path, default=BUNDLED_TEMPLATES,
                    help="MaskTheFace templates: a directory holding masks/masks.cfg, or the "
                         "maskthefacetemplates.tar (default: the bundled %(default)s)")
    args = ap.parse_args(argv)
    if args.out.exists() and not args.overwrite:
        fail(f"{args.out} exists; pass --overwrite to replace it")
    if not args.templates.exists():
        fail(f"templates not found: {args.templates}")
    render(args.out, args.templates)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB, {N_FRAMES} frames, "
          f"{WIDTH}x{HEIGHT} @ {FPS} fps, AAC {AUDIO_RATE} Hz mono)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
