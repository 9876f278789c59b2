"""The PyTorch original's checkpoints in harmonic_jax: a model of the original architecture,
written here with the original's parameter names (kulikovv/harmonic, models/unet.py and
harmonic/sinconv.py; METHOD.md section B), random weights, and the same output from ours."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from harmonic_jax import guides, port

torch = pytest.importorskip("torch", reason="the port's parity test needs the 'parity' extra")
nn = torch.nn
F = torch.nn.functional


def _double(c_in, c_out):
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU())


class _Block(nn.Module):  # the original's "double_conv": names ...conv.{0,1,3,4}
    def __init__(self, c_in, c_out):
        super().__init__()
        self.conv = _double(c_in, c_out)

    def forward(self, x):
        return self.conv(x)


class _In(nn.Module):  # names inc.conv.conv.*
    def __init__(self, c_in, c_out):
        super().__init__()
        self.conv = _Block(c_in, c_out)

    def forward(self, x):
        return self.conv(x)


class _Down(nn.Module):  # names down{k}.mpconv.1.conv.*
    def __init__(self, c_in, c_out):
        super().__init__()
        self.mpconv = nn.Sequential(nn.MaxPool2d(2), _Block(c_in, c_out))

    def forward(self, x):
        return self.mpconv(x)


class _AddSine(nn.Module):
    """Appends sin(alpha * linspace(0, 1, h)[row] + beta * linspace(0, 1, w)[col] + phase)."""

    def __init__(self, alpha, beta, phase):
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor([alpha]))
        self.beta = nn.Parameter(torch.tensor([beta]))
        self.phase = nn.Parameter(torch.tensor([phase]))

    def forward(self, x):
        b, _, h, w = x.shape
        rows = torch.linspace(0.0, 1.0, h)[:, None] * self.alpha
        cols = torch.linspace(0.0, 1.0, w)[None, :] * self.beta
        wave = torch.sin(rows + cols + self.phase).expand(b, 1, h, w)
        return torch.cat([x, wave], dim=1)


class _SinConv(nn.Module):
    def __init__(self, c_in, c_out, sins):
        super().__init__()
        self.addcoords = nn.Sequential(*[_AddSine(*s) for s in sins])
        self.conv = nn.Conv2d(c_in + len(sins), c_out, 7, padding=3)

    def forward(self, x):
        return self.conv(self.addcoords(x))


class _Up(nn.Module):
    def __init__(self, c_in, c_out, sins):
        super().__init__()
        self.sinconv = _SinConv(c_in, c_out, sins)
        self.conv = _Block(c_out, c_out)

    def forward(self, x, skip):
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return self.conv(self.sinconv(torch.cat([skip, x], dim=1)))


class _Out(nn.Module):
    def __init__(self, c, n, sins):
        super().__init__()
        self.sinconv = _SinConv(c, c, sins)
        self.conv = nn.Conv2d(c, n, 1)

    def forward(self, x):
        return self.conv(self.sinconv(x))


class OriginalUNet(nn.Module):
    def __init__(self, channels, sins):
        super().__init__()
        self.inc = _In(channels, 64)
        self.down1, self.down2 = _Down(64, 128), _Down(128, 256)
        self.down3, self.down4 = _Down(256, 512), _Down(512, 512)
        self.up1, self.up2 = _Up(1024, 256, sins), _Up(512, 128, sins)
        self.up3, self.up4 = _Up(256, 64, sins), _Up(128, 64, sins)
        self.outc = _Out(64, len(sins), sins)

    def forward(self, x):
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x = self.up1(self.down4(x4), x4)
        return self.outc(self.up4(self.up3(self.up2(x, x3), x2), x1))


@pytest.fixture(scope="module")
def original():
    """The original UNet in eval mode with random weights and BatchNorm statistics, and its
    DataParallel state dict (keys prefixed with ``module.``)."""
    torch.manual_seed(0)
    net = OriginalUNet(3, guides.ORIGINAL_CVPPP)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 2.0)
    net.eval()
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    return net, state


def test_ported_network_computes_what_the_original_computes(original):
    net, state = original
    height, width = 64, 96  # non-square: a row/column mix-up shows
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, height, width, 3)).astype(np.float32)
    mean, std = (np.asarray(v, np.float32) for v in port.IMAGENET_NORM)
    with torch.no_grad():  # the original's input: torchvision's Normalize of images / 255
        theirs = net(torch.from_numpy(((images / 255 - mean) / std).transpose(0, 3, 1, 2)))
    theirs = theirs.numpy().transpose(0, 2, 3, 1)

    model, variables, guide_params, config = port.load_original(state, frame=(height, width))
    ours = jax.jit(lambda v, x: model.apply(v, x, guide_params=guide_params))(
        variables, jnp.asarray(images / 255 - 0.5))  # our pipeline's input
    ours = np.asarray(ours)
    assert ours.shape == theirs.shape == (2, height, width, 12)
    relative = np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs))
    print(f"ported vs original: max |diff| / max |output| = {relative:.2e}")
    assert relative <= 1e-4, relative
    np.testing.assert_allclose(guide_params, guides.ORIGINAL_CVPPP, rtol=1e-6)
    assert (model.family, model.upsample, config.background_instance) == (
        "original", "align_corners", True)
    n_params = sum(x.size for x in jax.tree.leaves(variables["params"]))
    assert n_params == sum(p.numel() for name, p in net.named_parameters()
                           if ".addcoords." not in name) == 28_837_260


def test_reads_a_saved_checkpoint_file_and_the_cli_spec(original, tmp_path):
    _, state = original
    path = tmp_path / "original.pth"
    torch.save(state, path)
    _, from_file, _, _ = port.load_original(path)
    _, from_dict, _, _ = port.load_original(state)
    jax.tree.map(np.testing.assert_array_equal, from_file, from_dict)
    from harmonic_jax.cli import _load_model

    model, from_cli, _, config = _load_model(f"original:{path}")
    jax.tree.map(np.testing.assert_array_equal, from_cli, from_dict)
    assert model.family == "original" and config.min_size == port.ORIGINAL_MIN_SIZE


def test_clear_errors_for_other_state_dicts(original, tmp_path):
    _, state = original
    plain = {k[len("module."):]: v for k, v in state.items()}
    missing = {k: v for k, v in plain.items() if k != "up2.conv.conv.3.weight"}
    with pytest.raises(ValueError, match=r"lacks up2\.conv\.conv\.3\.weight"):
        port.load_original(missing)
    with pytest.raises(ValueError, match=r"entries the original UNet does not: \['extra'\]"):
        port.load_original(dict(plain, extra=torch.zeros(1)))
    wrong = dict(plain, **{"outc.conv.weight": torch.zeros(12, 32, 1, 1)})
    with pytest.raises(ValueError, match=r"outc\.conv\.weight has shape \(12, 32, 1, 1\)"):
        port.load_original(wrong)
    drifted = dict(plain, **{"up3.sinconv.addcoords.4.alpha": torch.tensor([1.0])})
    with pytest.raises(ValueError, match="guide parameters of up3 differ from up1's"):
        port.load_original(drifted)
    with pytest.raises(FileNotFoundError, match="no checkpoint file"):
        port.load_original(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable PyTorch state dict"):
        port.load_original(tmp_path / "junk.pth")


def test_grey_networks_get_the_grey_settings():
    """The original's C. elegans network takes one channel, Normalize(0.5, 0.5), area 500."""
    torch.manual_seed(1)
    state = OriginalUNet(1, guides.ORIGINAL_C_ELEGANS).state_dict()
    model, variables, guide_params, config = port.load_original(state)
    assert model.input_norm == port.GREY_NORM and config.min_size == port.ORIGINAL_MIN_SIZE_GREY
    assert variables["params"]["DoubleConv_0"]["Conv_0"]["kernel"].shape == (3, 3, 1, 64)
    np.testing.assert_allclose(guide_params, guides.ORIGINAL_C_ELEGANS, rtol=1e-6)
    with pytest.raises(ValueError, match="input_norm must be"):
        port.load_original(state, input_norm="imagenet")
