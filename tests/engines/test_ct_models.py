"""CT denoisers: shapes on any size, RED-CNN's architecture, the UNet's identity at init."""

from __future__ import annotations

import pytest
import torch

from engines.ct.models import RedCnn, ResidualUNet
from engines.ct.specs import CT_SPECS, HU_OFFSET, HU_SCALE, TILE_PX


@pytest.mark.parametrize("shape", [(2, 1, 21, 21), (1, 1, 37, 50)])
def test_red_cnn_keeps_any_size(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    x = torch.rand(shape)
    with torch.no_grad():
        y = RedCnn(features=8)(x)
    assert y.shape == x.shape
    assert (y >= 0).all()  # the paper's final ReLU: never below air (0 in these units)


def test_red_cnn_is_the_paper_architecture() -> None:
    net = RedCnn()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    deconvs = [m for m in net.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(convs) == 5 and len(deconvs) == 5
    assert all(m.kernel_size == (5, 5) and m.stride == (1, 1) and m.padding == (0, 0)
               for m in convs + deconvs)
    assert [m.out_channels for m in convs] == [96] * 5
    assert [m.out_channels for m in deconvs] == [96] * 4 + [1]
    # 96*25*(1 + 4*96) + 96*25*(4*96 + 1) + biases: ~1.85 M parameters
    assert sum(p.numel() for p in net.parameters()) == 1_848_865


def test_red_cnn_prediction_only_sees_its_receptive_field() -> None:
    torch.manual_seed(1)
    net = RedCnn(features=4).eval()
    x = torch.rand(1, 1, 64, 64)
    x2 = x.clone()
    x2[0, 0, 0, 0] += 1.0  # a corner pixel; the centre is 32 px away, beyond 20
    with torch.no_grad():
        a, b = net(x), net(x2)
    r = RedCnn.receptive_radius_px
    assert torch.equal(a[..., r + 1:, r + 1:], b[..., r + 1:, r + 1:])
    assert not torch.equal(a, b)


def test_unet_is_the_identity_at_init_and_keeps_multiples_of_16() -> None:
    torch.manual_seed(0)
    net = ResidualUNet(features=(4, 4, 8, 8, 16, 4)).eval()
    x = torch.rand(2, 1, 32, 48)
    with torch.no_grad():
        assert torch.equal(net(x), x)
    with torch.no_grad():
        net.unet.final_conv.bias.fill_(0.1)
        assert torch.allclose(net(x), x - 0.1)


def test_specs_state_one_contract() -> None:
    for key, spec in CT_SPECS.items():
        assert spec.name == f"ct_{key}" and spec.weights == f"ct_{key}.pt"
        assert spec.input_shape == spec.output_shape == (1, TILE_PX, TILE_PX)
        assert TILE_PX % spec.extra["multiple_px"] == 0
        assert spec.extra["input"] == "(HU + 1000) / 1000"
        assert spec.weights_dir.name == "weights" and spec.weights_dir.parent.name == "ct"
    assert (HU_OFFSET, HU_SCALE) == (1000.0, 1000.0)
