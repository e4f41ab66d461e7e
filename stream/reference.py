"""Your own face: the lower face of a reference photo, rendered onto the masked face.

A generative inpainter can only guess a plausible face. When a photo of the person
is available — given by the user (`Unmasker(reference=...)`, `--reference`) or seen
by the stream itself before the mask went on (`enrol="auto"`) — the hidden part can
show the person's real lower face instead.

How a frame is rendered (all in the inpainting window, `models.spec.window_matrix`):

1. Geometry: mediapipe's 468-point mesh of the reference and the current face's mesh
   (the tracker's points where visible, the analyser's estimate under the covering,
   so the jaw and lips follow the person) share MediaPipe's canonical triangulation
   (`models/canonical_face_model.obj`, Apache-2.0). Each triangle of the reference is
   mapped affinely onto the same triangle of the current face (one dense remap).
2. Visibility: a triangle whose winding is reversed, in the reference or in the
   current face, is turned away from that camera (or folded by a bad landmark): it
   is not drawn, and the generative inpainter's output shows there instead.
   Overlaps (the nose over the far cheek on a turned head) are resolved by drawing
   triangles far-to-near by the canonical model's depth, turned by the face's yaw.
3. Lighting: the rendered reference and the frame show the same skin just outside the
   hole; the difference of their local means there (normalised convolution, in CIELAB) is a
   smooth offset field that relights the reference to the frame's light. What is left of
   a step at the hole's border is then taken out by a narrow additive correction
   (`match_border`: equal to the frame just outside the hole, gone a few pixels inside).
4. The compositor blends the window into the hole exactly as for the generative
   path (feathered, inside the dilated covering only).

Everything stays in memory; nothing is written unless the caller asks
(`Unmasker.save_enrolled`).
"""
from __future__ import annotations

import functools
from fractions import Fraction
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from models.colour import REFERENCE_COLOUR_PATH
from models.spec import CANONICAL_SIZE, window_matrix
from stream.alignment import align_face, border_classes, yaw_proxy

CANONICAL_OBJ = Path(__file__).resolve().parents[1] / "models" / "canonical_face_model.obj"
# Triangles smaller than this (window px²) carry no texture worth warping and make
# ill-conditioned affine maps.
MIN_TRIANGLE_AREA = 0.5
# Relighting: the band outside the hole compared between the frame and the render
# (fraction of the window), the smoothness of the offset field, and its limits (CIELAB units).
LIGHT_BAND_FRACTION = 14 / 128
LIGHT_SIGMA_FRACTION = 14 / 128
LIGHT_OFFSET_MAX = np.array([40.0, 25.0, 25.0], np.float32)      # L*, a*, b*
LOCAL_OFFSET_SPREAD = np.array([12.0, 6.0, 6.0], np.float32)
LIGHT_SMOOTHING = 0.85     # video: share of the relighting field kept from one frame to the next
LIGHT_EVERY = 4            # video: the lighting is solved on every this-many-th frame
# The reference's lower face is kept at this size (px): above any window it is drawn into
# at 720p/1080p face sizes, so per-frame sampling never needs a filter.
REFERENCE_WINDOW = 192
# Seam: just outside the hole the render is pulled onto the frame's own pixels (a band of
# this fraction of the window), and the correction fades into the hole over about twice the
# blur's sigma; beyond the clamp (8-bit levels) a ring pixel is not skin in one of the images.
SEAM_BAND_FRACTION = 3 / 128
SEAM_SIGMA_FRACTION = 4 / 128
SEAM_OFFSET_MAX = 40.0
# After the colour correction the finished own-face render's border is moved this share of the way to what
# lies around the hole (ReferenceFace._meet_the_border, within stream.alignment.border_classes: away from the
# eyes, whose lashes and make-up pulled the render's cheeks darker, identity cosine 0.646 -> 0.619 on the
# real clip 04). Chosen on the val split (300 faces, the photo mirrored, turned and relit as the reference,
# over the matched generated fill): border steps above 2.3 ΔE on the skin 3.7 -> 2.3 % of faces (3.0 % at
# full strength), on the whole border 3.0 -> 2.3 %, hole colour 2.64 -> 2.63 ΔE, PSNR +0.03 dB.
REFERENCE_BORDER_MATCH = 0.5
# A large face's reference is drawn at its frame resolution, up to this many px (3x the 128-px
# window: a 720p webcam face; benchmarks.reference: ~4.7 ms a face on 2 cores, the 128-px window 2.6).
REFERENCE_PX = 384
# Where the render and the generative fallback meet, blend over this many pixels.
FALLBACK_FEATHER_PX = 2
# Enrolment: a face counts as frontal under this yaw proxy, and as sharp when the
# variance of its crop's Laplacian exceeds this (8-bit, 128 px crop).
ENROL_MAX_YAW = 0.25
ENROL_MIN_SHARPNESS = 40.0


@functools.lru_cache(maxsize=1)
def canonical_mesh() -> tuple[np.ndarray, np.ndarray]:
    """(triangles (898, 3) vertex indices, vertices (468, 3)) of MediaPipe's canonical face."""
    verts, tris = [], []
    for line in CANONICAL_OBJ.read_text().splitlines():
        if line.startswith("v "):
            verts.append([float(v) for v in line.split()[1:4]])
        elif line.startswith("f "):
            # "f v/vt v/vt v/vt": the vertex indices are the mesh's landmark indices (1-based).
            tris.append([int(p.split("/")[0]) - 1 for p in line.split()[1:4]])
    return np.array(tris, np.int32), np.array(verts, np.float32)


@functools.lru_cache(maxsize=1)
def _front_winding() -> np.ndarray:
    """Sign of each triangle's area in image coordinates (y down) for a face seen from the front."""
    tris, verts = canonical_mesh()
    xy = verts[:, :2] * [1, -1]          # the model's y points up; images' down
    return np.sign(_signed_areas(xy, tris))


def _signed_areas(points: np.ndarray, tris: np.ndarray) -> np.ndarray:
    a, b, c = points[tris[:, 0]], points[tris[:, 1]], points[tris[:, 2]]
    return 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))


def facing_triangles(points: np.ndarray) -> np.ndarray:
    """(898,) bool: triangles that face the camera (same winding as the frontal model, not degenerate)."""
    tris, _ = canonical_mesh()
    area = _signed_areas(points, tris)
    return (np.sign(area) == _front_winding()) & (np.abs(area) >= MIN_TRIANGLE_AREA)


def draw_order(points: np.ndarray) -> np.ndarray:
    """Triangle indices far to near for a face turned by its yaw (painter's algorithm)."""
    tris, verts = canonical_mesh()
    angle = np.arcsin(np.clip(yaw_proxy(points), -1, 1))
    # Depth toward the camera of the canonical model rotated about the vertical axis.
    depth = verts[:, 2] * np.cos(angle) - verts[:, 0] * np.sin(angle)
    return np.argsort((depth[tris[:, 0]] + depth[tris[:, 1]] + depth[tris[:, 2]]) / 3)


@dataclass
class ReferenceFace:
    """A photo of the person and its 468 mesh landmarks (photo pixels)."""

    image: np.ndarray
    landmarks: np.ndarray
    source: str = "photo"            # "photo" (given by the user) or "enrolled" (seen unmasked)
    sharpness: float = 0.0

    def __post_init__(self):
        self.landmarks = np.asarray(self.landmarks, np.float32)
        # Per frame we only ever sample the lower face at about the window's scale: keep
        # that part of the photo once, resampled to REFERENCE_WINDOW px (anti-aliased),
        # instead of filtering the whole photo every frame.
        self.texture, self.texture_points = _lower_face_texture(self.image, self.landmarks, REFERENCE_WINDOW)
        self.visible = facing_triangles(self.landmarks)
        self._larger: dict[int, tuple[np.ndarray, np.ndarray]] = {}   # textures above REFERENCE_WINDOW
        self._light = None        # the last frame's relighting field (smooth=True: video)
        self._offset = None       # and its border correction
        self._correction = None   # what both added to the render (BGR, window px), and
        self._unlit_frames = 0    # the frames drawn with it since it was solved
        self._share = 0.0         # and the share of the hole the render covered then
        self._fallback_field = self._fallback_fix = None   # the generative fill's border match (match_fallback_border)
        self._colour_shift = None  # the render's mean-colour correction (models.colour), Lab, carried in video
        self._border_field = None  # the finished render's border match (_meet_the_border), carried in video
        self.correct_colour = True  # False: the render as relit only (what training.fit_colour fits on)
        self.colour_path = REFERENCE_COLOUR_PATH   # that correction's fit (the Unmasker sets a candidate's)
        self.border_match = REFERENCE_BORDER_MATCH  # _meet_the_border's share (0: off)

    @classmethod
    def from_image(cls, image_or_path, mesh=None) -> "ReferenceFace":
        """Analyse a reference photo once (mediapipe's mesh in still-image mode).

        Raises ValueError with one clear line when the file is unreadable or holds no face.
        """
        image = image_or_path
        if not isinstance(image, np.ndarray):
            path = Path(image_or_path)
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                raise ValueError(f"cannot read the reference photo {path}")
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError("the reference must be an H x W x 3 uint8 BGR image")
        landmarks = _mesh_landmarks(image, mesh)
        if landmarks is None:
            raise ValueError("no face found in the reference photo")
        return cls(image, landmarks, "photo", sharpness(image, landmarks))

    def keep_lower_face(self, max_size: int | None = None) -> None:
        """Drop the image (an enrolled frame is not kept in memory), keeping the lower face only: at
        REFERENCE_WINDOW px, and for renders at the frame's resolution at up to `max_size` px (no
        more than the face spans in the image)."""
        if max_size and max_size > REFERENCE_WINDOW and self.image is not None:
            span = REFERENCE_WINDOW / _scale_of(face_window_matrix(self.landmarks, REFERENCE_WINDOW))
            top = int(min(max_size, 32 * np.ceil(span / 32)))
            if top > REFERENCE_WINDOW:
                self._larger[top] = _lower_face_texture(self.image, self.landmarks, top)
        self.image = None

    def _texture_for(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """The lower face kept at least at `size` px where it can be (from the image; without it, from
        the largest texture kept), so a render above REFERENCE_WINDOW is not upsampled from it."""
        if size <= REFERENCE_WINDOW:
            return self.texture, self.texture_points
        if size not in self._larger:
            if self.image is not None:
                self._larger[size] = _lower_face_texture(self.image, self.landmarks, size)
            else:
                kept = [k for k in self._larger if k > REFERENCE_WINDOW]
                if not kept:
                    return self.texture, self.texture_points
                top = max(kept)
                if size >= top:
                    return self._larger[top]
                texture, points = self._larger[top]
                # resize's pixel centres: a source pixel x lands at (x + 0.5) * scale - 0.5.
                self._larger[size] = (cv2.resize(texture, (size, size), interpolation=cv2.INTER_AREA),
                                      ((points + 0.5) * (size / top) - 0.5).astype(np.float32))
        return self._larger[size]

    def render(self, window_points: np.ndarray, frame_window: np.ndarray, hole: np.ndarray,
               fallback: np.ndarray, smooth: bool = False) -> tuple[np.ndarray, float]:
        """This face drawn into one inpainting window.

        window_points: (468, 2) the current face's landmarks in window pixels.
        frame_window: (S, S, 3) the frame's window (for relighting; read outside the hole).
        hole: (S, S) float, > 0.5 where the covering is. fallback: (S, S, 3) the generative
        inpainter's output, used where the reference has no visible texture.
        smooth: video (the lighting is carried over frames, and solved on every LIGHT_EVERY-th).
        Returns (window, share of the hole covered by the reference).
        """
        size = frame_window.shape[0]
        inside = hole > 0.5
        box = cv2.boundingRect(inside.view(np.uint8))
        texture, texture_points = self._texture_for(size)
        drawn, covered = warp_mesh(texture, texture_points, window_points, size, self._drawable(window_points), box=box)
        share = float(covered[inside].mean()) if box[2] > 0 else 0.0
        if share == 0.0:
            return fallback, 0.0
        weights = _fallback_weights(covered)
        if self._relight_due(smooth):
            lit, correction = self._light_to_frame(drawn, covered, frame_window, hole, smooth)
            fallback_fix = self._match_fallback(lit, fallback, weights, frame_window, hole, smooth)
            lit, correction, fallback_fix = self._correct_colour(lit, correction, fallback, fallback_fix, weights,
                                                                 frame_window, hole, smooth)
            lit, _, fallback_fix = self._meet_the_border(lit, correction, fallback, fallback_fix, weights,
                                                         frame_window, hole, window_points, smooth)
        else:
            lit, fallback_fix = drawn + self._correction, self._fallback_fix
        blended = cv2.blendLinear(lit, fallback.astype(np.float32) + fallback_fix, *weights)
        return np.clip(blended + 0.5, 0, 255).astype(np.uint8), share

    def render_region(self, window_points: np.ndarray, frame_window: np.ndarray, hole: np.ndarray,
                      fallback: np.ndarray, out_size: int, smooth: bool = False
                      ) -> tuple[np.ndarray, float, tuple[int, int]]:
        """This face drawn at `out_size` px (the frame's own resolution on a large face), only around
        the hole: the same inputs as `render`, at the window's S px.

        The texture is sampled at out_size, only in the hole's box (grown by the feathering); the
        lighting, smooth by design, is solved on the window's render as `render` solves it, and its
        correction resampled.
        Returns (the drawn part of the out_size² window, share of the hole covered, its (x, y) there).
        """
        size = frame_window.shape[0]
        scale = out_size / size
        inside = hole > 0.5
        box = cv2.boundingRect(inside.view(np.uint8))
        if box[2] == 0:
            return _window_to_region(fallback, scale, (0, 0, out_size, out_size), cv2.INTER_LINEAR), 0.0, (0, 0)
        margin = int(np.ceil(scale)) + FALLBACK_FEATHER_PX + 1
        region = (max(int(box[0] * scale) - margin, 0), max(int(box[1] * scale) - margin, 0),
                  min(int(np.ceil((box[0] + box[2]) * scale)) + margin, out_size),
                  min(int(np.ceil((box[1] + box[3]) * scale)) + margin, out_size))
        x0, y0, x1, y1 = region
        use = self._drawable(window_points)
        if self._relight_due(smooth):
            # The lighting from the window's own render (as `render` solves it), so that the own face
            # is lit the same at any size.
            drawn, covered_window = warp_mesh(*self._texture_for(size), window_points, size, use, box=box)
            share = self._share = float(covered_window[inside].mean())
            if share == 0.0:
                return _window_to_region(fallback, scale, region, cv2.INTER_LINEAR), 0.0, (x0, y0)
            lit, correction = self._light_to_frame(drawn, covered_window, frame_window, hole, smooth)
            weights = _fallback_weights(covered_window)
            fallback_fix = self._match_fallback(lit, fallback, weights, frame_window, hole, smooth)
            lit, correction, fallback_fix = self._correct_colour(lit, correction, fallback, fallback_fix, weights,
                                                                 frame_window, hole, smooth)
            _, correction, fallback_fix = self._meet_the_border(lit, correction, fallback, fallback_fix, weights,
                                                                frame_window, hole, window_points, smooth)
        else:
            share = self._share       # of the frame that solved the lighting (a frame or two ago)
            correction, fallback_fix = self._correction, self._fallback_fix
        texture, texture_points = self._texture_for(out_size)
        detail, covered = warp_mesh(texture, texture_points, window_points * scale, out_size, use,
                                    box=tuple(round(v * scale) for v in box), region=region)
        # The correction is smooth: resampled and added in 8 bits, saturated (one pass each instead
        # of float copies of a large window).
        lit = cv2.add(detail, _window_to_region(correction, scale, region, cv2.INTER_LINEAR), dtype=cv2.CV_8U)
        # The fill's border match is smooth too: added at the window's size, before the one resize.
        fallback = _window_to_region(cv2.add(fallback, fallback_fix, dtype=cv2.CV_8U), scale, region, cv2.INTER_LINEAR)
        return cv2.blendLinear(lit, fallback, *_fallback_weights(covered)), share, (x0, y0)

    def _match_fallback(self, lit: np.ndarray, fallback: np.ndarray, weights, frame_window: np.ndarray,
                        hole: np.ndarray, smooth: bool) -> np.ndarray:
        """What to add to the generative fill where it shows (where the reference has no texture) so
        that the hole's border shows no step there either (match_fallback_border); (S, S, 3) float32.
        With `smooth` it is carried over frames like the lighting, and kept for the unlit frames."""
        blended = cv2.blendLinear(lit, fallback.astype(np.float32), *weights)
        fix, field = match_fallback_border(blended, frame_window, hole, self._fallback_field if smooth else None,
                                           LIGHT_SMOOTHING ** LIGHT_EVERY)
        self._fallback_field, self._fallback_fix = (field, fix) if smooth else (None, None)
        return fix

    def _correct_colour(self, lit, correction, fallback, fallback_fix, weights, frame_window, hole, smooth):
        """The relit render's mean colour moved by the fitted own-face correction (models.colour,
        models/weights/reference_colour.json), ramped in from the hole's border, which the relighting
        already matched. Measured on 1,427 covered photos of 288 people (real references): hole colour
        4.71 -> 4.40 ΔE, border steps above 2.3 ΔE 9.9 -> 8.6 %, top-1 0.819 -> 0.822
        (benchmarks/reports/real/2026-12-03-real-same-person-own-face-colour). The offset
        joins the relighting's correction and the fill's fix, so it is carried over the unlit frames and
        drawn at the frame's resolution too. Returns (lit, correction, fallback_fix)."""
        colour = _reference_colour(self.colour_path) if self.correct_colour else None
        if colour is None:
            return lit, correction, fallback_fix
        inside = hole > 0.5
        blended = np.clip(cv2.blendLinear(lit, fallback.astype(np.float32) + fallback_fix, *weights) + 0.5,
                          0, 255).astype(np.uint8)
        shift = colour.shift(frame_window, inside, blended)
        if smooth and self._colour_shift is not None:
            keep = LIGHT_SMOOTHING ** LIGHT_EVERY
            shift = keep * self._colour_shift + (1 - keep) * shift
        self._colour_shift = shift if smooth else None
        offset = colour.ramped_offset(blended, inside, shift)
        lit, correction, fallback_fix = lit + offset, correction + offset, fallback_fix + offset
        if smooth:
            self._correction, self._fallback_fix = correction, fallback_fix
        return lit, correction, fallback_fix

    def _meet_the_border(self, lit, correction, fallback, fallback_fix, weights, frame_window, hole,
                         window_points, smooth):
        """The finished render's inner border ring moved `border_match` (REFERENCE_BORDER_MATCH) of the way
        to what lies just outside the hole (match_fallback_border within border_classes: skin to skin,
        background to background, not toward the eyes), after the colour correction, whose ramp and mean
        shift can leave a step the relighting had removed. Joins the correction like the colour offset
        (carried over the unlit frames, drawn at any size).
        Returns (lit, correction, fallback_fix)."""
        if not self.correct_colour or not self.border_match:
            return lit, correction, fallback_fix
        blended = cv2.blendLinear(lit, fallback.astype(np.float32) + fallback_fix, *weights)
        fix, field = match_fallback_border(blended, frame_window, hole, self._border_field if smooth else None,
                                           LIGHT_SMOOTHING ** LIGHT_EVERY,
                                           regions=border_classes(window_points, frame_window.shape[0]))
        self._border_field = field if smooth else None
        fix *= self.border_match
        lit, correction, fallback_fix = lit + fix, correction + fix, fallback_fix + fix
        if smooth:
            self._correction, self._fallback_fix = correction, fallback_fix
        return lit, correction, fallback_fix

    def _drawable(self, window_points: np.ndarray) -> np.ndarray:
        """Triangles drawn: facing the camera in both the reference and the current face.

        Only the mesh's own triangles: past its outline (the neck below the jaw, the cheeks' edge)
        the generative fill shows. Carrying the outline triangles on past it drew the reference
        photo's own neck, hair and background there: on 1,427 covered photos of 288 people the
        border's colour step 1.75 -> 0.60 ΔE, the hole's colour 5.26 -> 4.76 ΔE and identity
        top-1 0.819 -> 0.821 without it (benchmarks/reports/real)."""
        return self.visible & facing_triangles(window_points)

    def _relight_due(self, smooth: bool) -> bool:
        """Video: the lighting changes slowly (it is smoothed over frames anyway), so it is solved on
        every LIGHT_EVERY-th frame only; in between, the last correction (in the face-aligned window,
        so it stays in place as the face moves) is added as it is."""
        if not smooth or self._correction is None or self._unlit_frames >= LIGHT_EVERY - 1:
            self._unlit_frames = 0
            return True
        self._unlit_frames += 1
        return False

    def _light_to_frame(self, drawn: np.ndarray, covered: np.ndarray, frame_window: np.ndarray, hole: np.ndarray,
                        smooth: bool) -> tuple[np.ndarray, np.ndarray]:
        """The (window-size) render relit to the frame's light and matched at the hole's border (float32
        BGR), and the correction that added to it. With `smooth` (video) the fields are carried over
        frames, and the correction is kept for the frames that are not relit."""
        # Solved on every LIGHT_EVERY-th frame: as much of the old field is kept per solve as
        # LIGHT_SMOOTHING keeps over that many frames (the light follows a change as fast).
        keep = LIGHT_SMOOTHING ** LIGHT_EVERY
        lit, light = relight(drawn, covered, frame_window, hole, self._light if smooth else None, keep)
        # The relighting is smooth by design (an offset field over a wide band); what is left of a
        # step at the hole's border is taken out here (measured on 1,427 covered photos of the
        # same people: see match_border).
        lit, offset = match_border(lit, covered, frame_window, hole, self._offset if smooth else None, keep)
        self._light, self._offset = (light, offset) if smooth else (None, None)
        correction = cv2.subtract(lit, drawn, dtype=cv2.CV_32F)
        self._correction = correction if smooth else None
        return lit, correction


@functools.lru_cache(maxsize=4)
def _reference_colour(path: Path):
    from models.colour import ColourCorrection
    return ColourCorrection.for_reference(path)


def render_size(frame_to_window: np.ndarray, size: int, limit: int | None) -> int:
    """The own face's render size for one face: the frame pixels its `size`-px window spans, in steps
    of 32 (so the lighting's smoothing state and the kept textures change size rarely as a face
    moves), within [size, limit]; `size` (the window itself) when limit is None or not above it."""
    if not limit or limit <= size:
        return size
    span = size / np.sqrt(abs(np.linalg.det(frame_to_window[:, :2])))
    return int(min(limit, max(size, 32 * round(span / 32))))


def _fallback_weights(covered: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(render, fallback) weights: a fade from the render to the generative fill over a few pixels
    where the reference's texture ends, at any size."""
    k = 2 * FALLBACK_FEATHER_PX + 1
    alpha = cv2.GaussianBlur(covered.astype(np.float32), (k, k), 0) * covered
    return alpha, 1 - alpha


def _window_to_region(image: np.ndarray, scale: float, region: tuple[int, int, int, int], interpolation) -> np.ndarray:
    """`image` (window px) resized by `scale` (as cv2.resize to round(S * scale) px would), only the
    `region` (x0, y0, x1, y1) of the result.

    Only the source's part under the region is resized: it starts at a multiple of the scale's
    denominator q (render sizes are steps of 32 px over the window, so scale = n / q with q small),
    where a whole source pixel lands on a whole destination pixel and the sampling positions are
    the whole resize's; two source pixels of margin keep its edge out of the region.
    """
    x0, y0, x1, y1 = region
    ratio = Fraction(round(image.shape[0] * scale), image.shape[0])
    q, n = ratio.denominator, ratio.numerator
    first = lambda v: max(((v * q) // n - 2) // q * q, 0)                       # a multiple of q, 2 px before v
    last = lambda v: min(-(-((v * q) // n + 3) // q) * q, image.shape[0])       # and after
    sx0, sy0, sx1, sy1 = first(x0), first(y0), last(x1), last(y1)
    part = cv2.resize(image[sy0:sy1, sx0:sx1], ((sx1 - sx0) * n // q, (sy1 - sy0) * n // q), interpolation=interpolation)
    ox, oy = sx0 * n // q, sy0 * n // q
    return part[y0 - oy:y1 - oy, x0 - ox:x1 - ox]


def warp_mesh(src: np.ndarray, src_points: np.ndarray, dst_points: np.ndarray, size: int,
              use: np.ndarray, hole: np.ndarray | None = None, box: tuple[int, int, int, int] | None = None,
              region: tuple[int, int, int, int] | None = None):
    """Piecewise-affine warp of `src` by mesh triangles onto a (size, size) canvas.

    Returns ((S, S, 3) image of src's dtype, bool (S, S) covered: the pixels the triangles drew).
    One triangle-id raster (drawn far to near) and one cv2.remap: no per-triangle image warps.
    With `hole` (or its bounding `box`, x, y, w, h), only the triangles near it (the hole's box grown
    by the relighting band) are drawn. With `region` (x0, y0, x1, y1), only that part of the canvas
    is drawn and returned.
    """
    from stream.rasterise import warp_maps    # numba: loaded with the first reference, not with the stream

    tris, _ = canonical_mesh()
    rx0, ry0, rx1, ry1 = region if region is not None else (0, 0, size, size)
    width, height = rx1 - rx0, ry1 - ry0
    near = (0, 0, width, height)
    if box is None:
        box = cv2.boundingRect((hole > 0.5).view(np.uint8)) if hole is not None else (0, 0, 0, 0)
    bx, by, bw, bh = box
    if bw > 0:
        pad = 2 * max(2, round(LIGHT_BAND_FRACTION * size))
        near = (max(bx - pad, 0) - rx0, max(by - pad, 0) - ry0, min(bx + bw - 1 + pad, size) - rx0,
                min(by + bh - 1 + pad, size) - ry0)
        near = (max(near[0], 0), max(near[1], 0), min(near[2], width), min(near[3], height))
    shifted = dst_points - np.array([rx0, ry0], dst_points.dtype) if (rx0 or ry0) else dst_points
    order = draw_order(dst_points)
    ids, map_xy, map_frac, drawn = warp_maps(shifted, src_points, tris, order[use[order]], near, (height, width))
    covered = ids >= 0
    if not drawn:
        return np.zeros((height, width, 3), src.dtype), covered
    out = cv2.remap(src, map_xy, map_frac, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out, covered


def relight(drawn: np.ndarray, covered: np.ndarray, frame_window: np.ndarray, hole: np.ndarray,
            previous_offset: np.ndarray | None = None, keep: float = LIGHT_SMOOTHING
            ) -> tuple[np.ndarray, np.ndarray | None]:
    """Shift the render's colour so that, just outside the hole, it matches the frame's own skin.

    covered: where the render shows the face itself (the mesh's own triangles), so that the ring
    outside the hole compares the same skin in both images. The correction is an additive offset
    in CIELAB: a per-channel gain in BGR (the first version) multiplied the reference's highlights
    past 255 whenever the photos' exposures differed (gains of 1.6-2 on a third of real photo
    pairs), and left the hole white or pink. With `previous_offset` (video), that share `keep` of
    it is kept. Returns (BGR float32 render, the offset field).
    """
    size = frame_window.shape[0]
    inside = (hole > 0.5).astype(np.uint8)
    band = max(2, round(LIGHT_BAND_FRACTION * size))
    ring = (_dilate_disc(inside, band) > 0) & (inside == 0) & covered
    if ring.sum() < 20:
        return drawn.astype(np.float32), previous_offset
    drawn_lab, frame_lab = _to_lab(drawn), _to_lab(frame_window)
    # Means, not medians: the hole is judged by its mean colour, and on real photo pairs the mean
    # offset lands nearer the true face (benchmarks/reports/real: the hole 7.3 -> 5.6 ΔE).
    ring_u8 = ring.view(np.uint8)
    ring_mean = lambda lab: np.array(cv2.mean(lab, mask=ring_u8)[:3], np.float32)   # 5x numpy's masked mean
    overall = np.clip(ring_mean(frame_lab) - ring_mean(drawn_lab), -LIGHT_OFFSET_MAX, LIGHT_OFFSET_MAX)
    # Light varies across a face: a local offset on a quarter-size grid (it is smooth by design),
    # fading far from the ring into the overall one.
    small = max(8, size // 4)
    (frame_mean, drawn_mean), w_blur = _local_means_on(ring, (frame_lab, drawn_lab), small,
                                                       LIGHT_SIGMA_FRACTION * small)
    trust = np.clip(w_blur * 6.0, 0.0, 1.0)[..., None]
    offset = trust * (frame_mean - drawn_mean) + (1 - trust) * overall
    # ... but only so much: a local offset far from the overall one is a ring pixel that is not
    # skin in one of the two images (hair, background: bright blotches).
    offset = np.clip(offset, overall - LOCAL_OFFSET_SPREAD, overall + LOCAL_OFFSET_SPREAD).astype(np.float32)
    if previous_offset is not None and previous_offset.shape == offset.shape:
        # Light changes slowly; the ring's statistics jitter from frame to frame (measured: the
        # reference path flickered 1.8x the generative one without this).
        offset = (keep * previous_offset + (1 - keep) * offset).astype(np.float32)
    relit = drawn_lab + cv2.resize(offset, (size, size), interpolation=cv2.INTER_LINEAR)
    return cv2.cvtColor(relit, cv2.COLOR_Lab2BGR) * 255.0, offset


def _to_lab(image: np.ndarray) -> np.ndarray:
    """8-bit BGR -> float32 CIELAB (L 0-100)."""
    return cv2.cvtColor(image.astype(np.float32) * (1 / 255.0), cv2.COLOR_BGR2Lab)


def match_border(drawn: np.ndarray, covered: np.ndarray, frame_window: np.ndarray, hole: np.ndarray,
                 previous: np.ndarray | None = None, keep: float = LIGHT_SMOOTHING) -> tuple[np.ndarray, np.ndarray | None]:
    """Add a smooth offset that makes the (relit, float32) render equal the frame on a narrow band
    just outside the hole and fades to nothing inside it, so the hole's border shows no step.

    The offset is the frame-minus-render difference on that band, spread by normalised
    convolution and weighted by how near the band a pixel is; clamped to SEAM_OFFSET_MAX.
    It is smooth by construction, so it is computed on a quarter-size grid (full size cost
    2 ms per 128-px window, 14 ms at 256 px) and resized up once.
    """
    size = frame_window.shape[0]
    inside = (hole > 0.5).astype(np.uint8)
    band = (_dilate_disc(inside, max(2, round(SEAM_BAND_FRACTION * size))) > 0) & (inside == 0) & covered
    if band.sum() < 20:
        return drawn, previous
    small = max(16, size // 4)
    (frame_mean, drawn_mean), w_blur = _local_means_on(band, (frame_window, drawn), small,
                                                       max(1.0, SEAM_SIGMA_FRACTION * small))
    spread = frame_mean - drawn_mean
    # Full strength on and next to the band; gone about two sigmas into the hole.
    near = np.clip(w_blur * 4.0, 0.0, 1.0)[..., None]
    offset = (np.clip(spread, -SEAM_OFFSET_MAX, SEAM_OFFSET_MAX) * near).astype(np.float32)
    if previous is not None and previous.shape == offset.shape:
        offset = (keep * previous + (1 - keep) * offset).astype(np.float32)
    return drawn + cv2.resize(offset, (size, size), interpolation=cv2.INTER_LINEAR), offset


def match_fallback_border(blended: np.ndarray, frame_window: np.ndarray, hole: np.ndarray,
                          previous: np.ndarray | None = None, keep: float = LIGHT_SMOOTHING,
                          regions=None) -> tuple[np.ndarray, np.ndarray | None]:
    """The offset that takes the render's inner border ring (just inside the hole) to the frame's
    local colour just outside it, gone a few pixels into the hole: for the generative fill, which
    shows wherever the reference has no texture (past the mesh's outline, turned-away triangles).

    match_border corrects the reference's own render on the same pixels outside the hole; the
    generative fill has no such pixels (it is the frame there), so its inner ring is compared with
    the frame's outer ring instead (local means, normalised convolution on a quarter-size grid).
    Measured on 600 covered photos of the same people, in two halves: border colour steps above
    2.3 ΔE 11.7 -> 7.7 % and 19.0 -> 12.0 %, hole colour 4.78 -> 4.74 ΔE.
    `regions`: (S, S) bool masks (stream.alignment.border_classes: the face's skin, the background):
    the border is matched within each, its inner ring to the outside of the same kind only (skin to
    skin, background to background, neither to the eyes), and fades where no such outside is near.
    Returns ((S, S, 3) float32 offset, zero outside the hole; the grid field, for `previous`).
    """
    size = frame_window.shape[0]
    inside = hole > 0.5
    inside_u8 = inside.view(np.uint8) if inside.dtype == np.bool_ else inside.astype(np.uint8)
    band = max(2, round(SEAM_BAND_FRACTION * size))
    outer = (_dilate_disc(inside_u8, band) > 0) & ~inside
    inner = inside & ~(cv2.erode(inside_u8, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band + 1,) * 2)) > 0)
    small = max(16, size // 4)
    sigma = max(1.0, SEAM_SIGMA_FRACTION * small)
    field = np.zeros((small, small, 3), np.float32)
    matched = False
    for region in ([None] if regions is None else regions):
        out_r, in_r = (outer, inner) if region is None else (outer & region, inner & region)
        if out_r.sum() < 20 or in_r.sum() < 20:
            continue
        matched = True
        (frame_mean,), w_out = _local_means_on(out_r, (frame_window,), small, sigma)
        (inner_mean,), w_in = _local_means_on(in_r, (blended,), small, sigma)
        both = ((w_out > 1e-3) & (w_in > 1e-3))[..., None]
        # Full strength on the inner ring, gone about two sigmas into the hole (and, within a kind,
        # where no outside of that kind is near).
        near = np.clip(w_in * 4.0, 0.0, 1.0)
        if region is not None:
            near = near * np.clip(w_out * 4.0, 0.0, 1.0)
        field += np.clip(frame_mean - inner_mean, -SEAM_OFFSET_MAX, SEAM_OFFSET_MAX) * both * near[..., None]
    if not matched:
        return np.zeros((size, size, 3), np.float32), previous
    if previous is not None and previous.shape == field.shape:
        field = (keep * previous + (1 - keep) * field).astype(np.float32)
    offset = cv2.resize(field, (size, size), interpolation=cv2.INTER_LINEAR) * inside[..., None]
    return offset.astype(np.float32, copy=False), field


def _local_means_on(where: np.ndarray, images, small: int, sigma: float):
    """Each image's local mean over the pixels `where` (normalised convolution), on a (small, small)
    grid with a Gaussian of `sigma` grid cells; also the blurred share of `where` (how near it a
    cell is). Returns ([(small, small, C) float32 per image], (small, small) float32)."""
    shrink = lambda x: cv2.resize(x, (small, small), interpolation=cv2.INTER_AREA)
    blur = lambda x: cv2.GaussianBlur(x, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    w_blur = blur(shrink(where.astype(np.float32)))
    w = np.maximum(w_blur, 1e-6)[..., None]
    # Masking by a bitwise AND (exactly x * where, a tenth of the cost of numpy's broadcast
    # multiply with its casts).
    where_u8 = where.view(np.uint8)
    means = [blur(shrink(cv2.bitwise_and(img, img, mask=where_u8).astype(np.float32, copy=False))) / w
             for img in images]
    return means, w_blur


@functools.lru_cache(maxsize=8)
def _disc_rectangles(radius: int) -> tuple[np.ndarray, ...]:
    """OpenCV's elliptic (2r+1)² kernel as the union of the rectangles under its staircase outline."""
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    half = {i - radius: int(np.flatnonzero(row).max()) - radius for i, row in enumerate(disc) if row.any()}
    steps = sorted({(w, max(abs(dy) for dy, hw in half.items() if hw >= w)) for w in set(half.values())})
    return tuple(cv2.getStructuringElement(cv2.MORPH_RECT, (2 * w + 1, 2 * h + 1)) for w, h in steps)


def _dilate_disc(mask: np.ndarray, radius: int) -> np.ndarray:
    """Exactly cv2.dilate by the elliptic kernel: dilation distributes over a union of kernels, and
    rectangles dilate separably (a few fast passes instead of one 841-tap kernel)."""
    out = None
    for rect in _disc_rectangles(radius):
        d = cv2.dilate(mask, rect)
        out = d if out is None else cv2.bitwise_or(out, d, dst=out)
    return out


def _lower_face_texture(image: np.ndarray, landmarks: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The photo's lower-face window at `size` px (anti-aliased when shrinking) and the landmarks in it."""
    m = face_window_matrix(landmarks, size)
    texture = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_AREA if _scale_of(m) < 1 else cv2.INTER_CUBIC,
                             borderMode=cv2.BORDER_REPLICATE)
    return texture, (landmarks @ m[:, :2].T + m[:, 2]).astype(np.float32)


def face_window_matrix(landmarks: np.ndarray, size: int) -> np.ndarray:
    """2x3: image pixels -> the face's lower-face window of `size` px (as the stream frames it)."""
    al = align_face(landmarks)
    m = np.vstack([window_matrix(size), [0, 0, 1]]) @ np.vstack([al.matrix * (CANONICAL_SIZE / al.size), [0, 0, 1]])
    return m[:2]


def _scale_of(m: np.ndarray) -> float:
    return float(np.sqrt(abs(np.linalg.det(m[:, :2]))))


def sharpness(image: np.ndarray, landmarks: np.ndarray) -> float:
    """Variance of the Laplacian of the face's 128 px lower-face window (higher = sharper)."""
    m = face_window_matrix(landmarks, 128)
    win = cv2.warpAffine(image, m, (128, 128), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
    return float(cv2.Laplacian(cv2.cvtColor(win, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


def enrolment_quality(image: np.ndarray, landmarks: np.ndarray) -> float | None:
    """A score for keeping this unmasked view as the person's reference; None when unfit."""
    if abs(yaw_proxy(landmarks)) > ENROL_MAX_YAW:
        return None
    if not facing_triangles(landmarks).mean() > 0.9:
        return None
    s = sharpness(image, landmarks)
    return s if s >= ENROL_MIN_SHARPNESS else None


def _mesh_landmarks(image: np.ndarray, mesh=None) -> np.ndarray | None:
    import mediapipe as mp
    own = mesh is None
    if own:
        mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1,
                                               refine_landmarks=False, min_detection_confidence=0.3)
    try:
        h, w = image.shape[:2]
        # Tightly cropped photos are found far more often with a margin.
        pad = max(h, w) // 4
        padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
        res = mesh.process(cv2.cvtColor(padded, cv2.COLOR_BGR2RGB))
    finally:
        if own:
            mesh.close()
    if not res.multi_face_landmarks:
        return None
    ph, pw = padded.shape[:2]
    return np.array([(p.x * pw - pad, p.y * ph - pad) for p in res.multi_face_landmarks[0].landmark], np.float32)
