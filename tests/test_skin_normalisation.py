"""The inpainter's skin-tone normalisation (models.networks.skin_statistics, issue 12): the redrawn
hole follows the colour and contrast of the person's own skin around it, for any weights."""
import numpy as np
import pytest
import torch

from models.networks import SKIN_RING_PX, Inpainter, skin_statistics


def _inputs(seed=0, n=2, size=128):
    g = torch.Generator().manual_seed(seed)
    image = 0.3 + 0.3 * torch.rand(n, 3, size, size, generator=g)
    hole = torch.zeros(n, 1, size, size)
    hole[:, :, 60:120, 24:104] = 1
    return image, hole, torch.rand(n, 1, size, size, generator=g), torch.tensor([0.0, 1.0])[:n]


def test_the_statistics_are_those_of_the_band_around_the_hole_only():
    image, hole, _, _ = _inputs()
    colour = torch.tensor([0.2, 0.5, 0.7]).view(1, 3, 1, 1)
    ring = torch.nn.functional.max_pool2d(hole, 2 * SKIN_RING_PX + 1, 1, SKIN_RING_PX) - hole
    # The band a flat skin colour, everything else (hole and far pixels) something else.
    image = torch.where(ring > 0, colour.expand_as(image), torch.full_like(image, 0.95))
    mean, spread = skin_statistics(image, hole)
    assert torch.allclose(mean.view(-1, 3), colour.view(1, 3).expand(2, 3), atol=1e-4)
    assert torch.allclose(spread.view(-1), torch.full((2,), 0.02))     # flat band: the floor, not 0


@pytest.mark.parametrize("gain, shift", [(1.0, (0.08, -0.05, 0.1)), (0.6, (0.1, 0.05, 0.0))])
def test_a_face_lit_or_toned_differently_is_redrawn_lit_and_toned_the_same_way(gain, shift, one_torch_thread):
    # x -> gain * x + shift_c on the visible pixels: the statistics follow, the network sees the same
    # normalised window, so the redrawn hole moves exactly the same way (any weights: random ones here).
    torch.manual_seed(0)
    net = Inpainter("fast", skin_normalised=True).eval()
    image, hole, lmap, gender = _inputs()
    moved = gain * image + torch.tensor(shift).view(1, 3, 1, 1)
    with torch.no_grad():
        out, out_moved = net(image, hole, lmap, gender), net(moved, hole, lmap, gender)
    inside = hole.expand_as(out) > 0
    expected = (gain * out + torch.tensor(shift).view(1, 3, 1, 1))[inside]
    ok = (expected > 0) & (expected < 1)               # away from the output's [0, 1] clamp
    assert ok.float().mean() > 0.9
    # Exact for a shift; for a gain to within the spread's small variance floor (sqrt(var + 1e-4)).
    assert torch.allclose(out_moved[inside][ok], expected[ok], atol=2e-4 if gain == 1 else 5e-3)
    # Without the normalisation the same network does not follow the skin.
    plain = Inpainter("fast", skin_normalised=False).eval()
    plain.load_state_dict(net.state_dict())
    with torch.no_grad():
        p, p_moved = plain(image, hole, lmap, gender), plain(moved, hole, lmap, gender)
    plain_expected = (gain * p + torch.tensor(shift).view(1, 3, 1, 1))[inside]
    assert (p_moved[inside] - plain_expected).abs().mean() > 0.01


def test_known_pixels_pass_through_untouched(one_torch_thread):
    net = Inpainter("fast", skin_normalised=True).eval()
    image, hole, lmap, gender = _inputs(1)
    with torch.no_grad():
        out = net(image, hole, lmap, gender)
    keep = hole.expand_as(out) == 0
    assert torch.equal(out[keep], image[keep])
    assert np.isfinite(out.numpy()).all()
