"""Unmask's networks (PyTorch; only training and export import this module).

* `Analyser`: one small shared encoder on the aligned masked crop with three
  heads: covering probability map, gender logit, and the full 468-point mesh
  (distilled from mediapipe on the *unmasked* face, so the hidden lower-face
  points are predicted from what is visible).
* `Inpainter`: a light-gated encoder-decoder that redraws the lower-face
  window from the holed image, the hole, a landmark map and the gender
  (a constant plane plus FiLM on the bottleneck: one network for both).
* `PatchDiscriminator`: spectral-norm PatchGAN for training the inpainter.

Inputs are float32 NCHW in [0, 1] (BGR order, as OpenCV hands frames over);
the per-model sidecar JSON written by `export.onnx` repeats these contracts.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.spec import ANALYSER, INPAINTER_PRESETS, NUM_LANDMARKS


def conv_bn(cin, cout, k=3, s=1, groups=1, act=True):
    layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: cheap on CPUs because the 3x3 is depthwise."""

    def __init__(self, cin, cout, stride, expand=3):
        super().__init__()
        mid = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.body = nn.Sequential(conv_bn(cin, mid, 1), conv_bn(mid, mid, 3, stride, groups=mid),
                                  conv_bn(mid, cout, 1, act=False))

    def forward(self, x):
        y = self.body(x)
        return x + y if self.use_res else y


class Analyser(nn.Module):
    def __init__(self, width: int = 1):
        super().__init__()
        c = [16, 24, 40, 64, 96]
        self.stem = conv_bn(3, c[0], 3, 2)                                   # 64
        self.s1 = nn.Sequential(InvertedResidual(c[0], c[1], 2), InvertedResidual(c[1], c[1], 1))  # 32
        self.s2 = nn.Sequential(InvertedResidual(c[1], c[2], 2), InvertedResidual(c[2], c[2], 1))  # 16
        self.s3 = nn.Sequential(InvertedResidual(c[2], c[3], 2), InvertedResidual(c[3], c[3], 1))  # 8
        self.s4 = nn.Sequential(InvertedResidual(c[3], c[4], 2), InvertedResidual(c[4], c[4], 1))  # 4
        # Segmentation decoder (FPN-like, additive skips keep it cheap).
        self.lat3 = nn.Conv2d(c[3], 32, 1)
        self.lat2 = nn.Conv2d(c[2], 32, 1)
        self.lat1 = nn.Conv2d(c[1], 32, 1)
        self.lat0 = nn.Conv2d(c[0], 32, 1)
        self.top = nn.Conv2d(c[4], 32, 1)
        self.smooth = nn.Sequential(conv_bn(32, 32, 3, groups=32), conv_bn(32, 16, 1))
        self.seg_out = nn.Conv2d(16, 1, 3, padding=1)
        # Landmarks and gender from the 4x4 map (position matters for landmarks).
        self.reduce = conv_bn(c[4], 48, 1)
        # LeakyReLU: with plain ReLU this layer died (98 % zeros) early in training.
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(48 * 16, 256), nn.LeakyReLU(0.1, inplace=True))
        self.landmarks = nn.Linear(256, NUM_LANDMARKS * 2)
        # Gender from pooled multi-scale features: a global property of the face.
        self.gender_head = nn.Sequential(nn.Linear(c[3] + c[4], 64), nn.LeakyReLU(0.1, inplace=True),
                                         nn.Linear(64, 1))

    def features(self, x):
        f0 = self.stem(x)
        f1 = self.s1(f0)
        f2 = self.s2(f1)
        f3 = self.s3(f2)
        f4 = self.s4(f3)
        return f0, f1, f2, f3, f4

    def forward(self, image):
        f0, f1, f2, f3, f4 = self.features(image)
        up = lambda t, ref: F.interpolate(t, size=ref.shape[-2:], mode="bilinear", align_corners=False)
        p = self.top(f4)
        p = up(p, f3) + self.lat3(f3)
        p = up(p, f2) + self.lat2(f2)
        p = up(p, f1) + self.lat1(f1)
        p = up(p, f0) + self.lat0(f0)
        mask_logits = self.seg_out(self.smooth(p))                      # N,1,64,64
        mask_logits = F.interpolate(mask_logits, size=image.shape[-2:], mode="bilinear",
                                    align_corners=False)
        h = self.fc(self.reduce(f4))
        # Landmarks as fractions of the crop side, around the canonical face.
        landmarks = self.landmarks(h).view(-1, NUM_LANDMARKS, 2)
        pooled = torch.cat([f3.mean((2, 3)), f4.mean((2, 3))], 1)
        return mask_logits, self.gender_head(pooled).squeeze(1), landmarks


class GatedConv(nn.Module):
    """Conv with a single-channel soft gate: the gating of gated convolutions at a fraction of the cost."""

    def __init__(self, cin, cout, k=3, s=1, d=1, act=True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout + 1, k, s, d * (k // 2), dilation=d)
        self.act = act
        self.cout = cout

    def forward(self, x):
        return self.gate(self.conv(x))

    def gate(self, y):
        """The activation and soft gate on the convolution's output `y` (cout + 1 channels)."""
        f, g = y[:, :self.cout], y[:, self.cout:]
        if self.act:
            f = F.leaky_relu(f, 0.2)
        return f * torch.sigmoid(g)


class DilatedBlock(nn.Module):
    def __init__(self, ch, dilation):
        super().__init__()
        self.dw = nn.Conv2d(ch, ch, 3, 1, dilation, dilation=dilation, groups=ch)
        self.pw = nn.Conv2d(ch, ch, 1)
        self.dw2 = nn.Conv2d(ch, ch, 3, 1, 1, groups=ch)
        self.pw2 = nn.Conv2d(ch, ch, 1)

    def forward(self, x, film):
        gamma, beta = film
        y = F.leaky_relu(self.pw(self.dw(x)), 0.2)
        y = self.pw2(self.dw2(y)) * (1 + gamma) + beta
        return x + y


class UpStage(nn.Module):
    """x2 upsample, concat the skip, 1x1 gated fuse, then a depthwise-separable 3x3.

    Full 3x3 convolutions at 64-128 px cost 3/4 of a plain U-Net's time; the
    separable form keeps the receptive field at a fraction of the cost.
    """

    def __init__(self, cin, cskip, cout, full3x3: bool = False):
        super().__init__()
        self.fuse = GatedConv(cin + cskip, cout, 1)
        self.spatial = (GatedConv(cout, cout, 3) if full3x3 else
                        nn.Sequential(nn.Conv2d(cout, cout, 3, 1, 1, groups=cout), nn.Conv2d(cout, cout, 1)))
        self.full3x3 = full3x3
        self.cin = cin

    def forward(self, x, skip):
        # fuse(cat[up(x), skip]) computed as up(W_x x) + W_skip skip + b: the 1x1 convolution and the
        # bilinear upsampling are both linear and commute (the interpolation weights sum to one, so
        # the bias goes on the skip term), so the low-resolution part is mixed down to the fuse's
        # fewer output channels before it is upsampled. The same weights and the same result (to
        # float rounding) at about two thirds of the stage's time: at batch 4 the inpainter's
        # upsampling alone had been a sixth of its time.
        conv = self.fuse.conv
        low = F.conv2d(x, conv.weight[:, : self.cin])
        x = self.fuse.gate(F.interpolate(low, size=skip.shape[-2:], mode="bilinear", align_corners=False)
                           + F.conv2d(skip, conv.weight[:, self.cin:], conv.bias))
        y = self.spatial(x)
        return y if self.full3x3 else x + F.leaky_relu(y, 0.2)


SKIN_RING_PX = 5          # width of the band of visible pixels around the hole that gives the skin tone
SKIN_Z_RANGE = 4.0        # normalised values are clipped to +-4 standard deviations of that band


def skin_statistics(image, hole, ring_px: int = SKIN_RING_PX):
    """Mean colour (per channel) and spread (one, shared) of the visible pixels bordering the hole.

    The band right around the covering is the person's own cheeks, nose and chin: its statistics
    carry the skin tone and the lighting of this face, whatever the data set was mostly made of.
    """
    k = 2 * ring_px + 1
    ring = (F.max_pool2d(hole, k, 1, ring_px) - hole).clamp(0, 1)
    count = ring.sum((2, 3), keepdim=True) + 1e-3
    mean = (image * ring).sum((2, 3), keepdim=True) / count
    var = (((image - mean) ** 2) * ring).sum((1, 2, 3), keepdim=True) / (3 * count)
    # A floor on the spread: a flat, overexposed band must not blow the normalised values up.
    return mean, torch.sqrt(var + 1e-4).clamp_min(0.02)


class Inpainter(nn.Module):
    def __init__(self, preset: str = "fast", skin_normalised: bool | None = None):
        super().__init__()
        cfg = INPAINTER_PRESETS[preset]
        c1, c2, c3 = cfg["channels"]
        self.preset = preset
        # Predict in the colour space of the person's own visible skin (issue 12): the network sees
        # the window normalised by the band around the hole and its output is de-normalised by it,
        # so no face is drawn lighter, darker or pinker than its own cheeks by default.
        self.skin_normalised = cfg.get("skin_normalised", False) if skin_normalised is None else skin_normalised
        # in: 3 holed image + 1 hole + 1 landmark map + 1 gender plane
        self.e1 = GatedConv(6, c1, 5, 2)                 # /2
        self.e2 = GatedConv(c1, c2, 3, 2)                # /4
        self.e3 = GatedConv(c2, c3, 3, 2)                # /8
        self.blocks = nn.ModuleList([DilatedBlock(c3, d) for d in cfg["dilations"]])
        self.film = nn.Linear(1, 2 * c3 * len(cfg["dilations"]))
        self.d3 = UpStage(c3, c2, c2, full3x3=True)      # /4: where the face is drawn
        self.d2 = UpStage(c2, c1, c1)                    # /2
        self.d1 = UpStage(c1, 6, 16)                     # full size
        self.out = nn.Conv2d(16, 3, 3, 1, 1)

    def forward(self, image, hole, landmark_map, gender):
        """image: N,3,H,W in [0,1]; hole: N,1,H,W (1 = redraw); gender: N (0 male .. 1 female)."""
        holed = image * (1 - hole)
        if self.skin_normalised:
            mean, spread = skin_statistics(image, hole)
            # Mapped back into [0, 1] around 0.5 so the layers see values of the usual range.
            z = ((image - mean) / spread).clamp(-SKIN_Z_RANGE, SKIN_Z_RANGE)
            net_in = (0.5 + z / (2 * SKIN_Z_RANGE)) * (1 - hole)
        else:
            net_in = holed
        g = gender.view(-1, 1, 1, 1).expand_as(hole)
        x0 = torch.cat([net_in, hole, landmark_map, g], 1)
        x1 = self.e1(x0)
        x2 = self.e2(x1)
        x = self.e3(x2)
        film = self.film(gender.view(-1, 1) * 2 - 1).view(x.shape[0], len(self.blocks), 2, -1, 1, 1)
        for i, blk in enumerate(self.blocks):
            x = blk(x, (film[:, i, 0], film[:, i, 1]))
        x = self.d3(x, x2)
        x = self.d2(x, x1)
        x = self.d1(x, x0)
        pred = torch.sigmoid(self.out(x))
        if self.skin_normalised:
            pred = (mean + spread * (pred - 0.5) * (2 * SKIN_Z_RANGE)).clamp(0, 1)
        # Only the hole is redrawn; known pixels pass through untouched.
        return holed + pred * hole


class PatchDiscriminator(nn.Module):
    """Spectral-norm PatchGAN; sees the image with the hole, landmark map and gender planes."""

    def __init__(self, cin=6, ch=48):
        super().__init__()
        sn = nn.utils.spectral_norm
        self.layers = nn.ModuleList([
            sn(nn.Conv2d(cin, ch, 4, 2, 1)),
            sn(nn.Conv2d(ch, ch * 2, 4, 2, 1)),
            sn(nn.Conv2d(ch * 2, ch * 4, 4, 2, 1)),
            sn(nn.Conv2d(ch * 4, ch * 4, 3, 1, 1)),
        ])
        self.head = sn(nn.Conv2d(ch * 4, 1, 3, 1, 1))

    def forward(self, image, hole, landmark_map, gender):
        g = gender.view(-1, 1, 1, 1).expand_as(hole)
        x = torch.cat([image, hole, landmark_map, g], 1)
        feats = []
        for layer in self.layers:
            x = F.leaky_relu(layer(x), 0.2)
            feats.append(x)
        return self.head(x), feats


def build(name: str):
    if name == "analyser":
        return Analyser()
    if name.startswith("inpainter_"):
        return Inpainter(name.split("_", 1)[1])
    raise KeyError(name)
