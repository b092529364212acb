"""The flop counter of the benchmark (minstf/tooling/flops.py) against torch's own flop counter."""
import numpy as np
import pytest

from minstf.config import SMALL_CONFIG
from minstf.switch import INTERFACE
from minstf.synthetic import recipe_weights
from minstf.tooling.flops import FlopCounter, gemm_rate, stage_flops


def test_the_counter_is_a_whole_kernel_layer():
    assert all(callable(getattr(FlopCounter(), name)) for name in INTERFACE)


def test_conv_and_linear_counts():
    k = FlopCounter()
    out = k.conv2d(np.zeros((2, 9, 7, 5), np.float32), np.zeros((4, 5, 3, 3), np.float32), stride=2, padding=1)
    assert out.shape == (2, 5, 4, 4) and k.flops == 2 * 2 * 5 * 4 * 4 * 5 * 9
    k.flops = 0
    k.linear(np.zeros((3, 7, 6), np.float32), np.zeros((8, 6), np.float32))
    assert k.flops == 2 * 21 * 6 * 8


@pytest.mark.parametrize("config, size", [(SMALL_CONFIG, (128, 192)), (SMALL_CONFIG, (64, 320))])
def test_forward_flops_equal_torchs_count_of_the_mirror(config, size):
    """Equal to the flop, but for the factorized prior's density network, which torch counts (its
    3-wide matrices at z +- 0.5: 2 x (3+9+9+9+3) multiply-adds per z element) and which is no GEMM."""
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    from minstf.mirror.stf_torch import STFTorch

    params = recipe_weights(config)
    H, W = size
    x = np.random.default_rng(0).random((1, 3, H, W), dtype=np.float32)
    ours = stage_flops(config, x)
    mirror = STFTorch(config).load_params(params).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        mirror(torch.from_numpy(x))
    forward = ours["g_a"] + ours["h_a"] + ours["hyper"] + ours["slices"] + ours["g_s"]
    z_elements = config.N_z * (H // 64) * (W // 64)
    assert forward + z_elements * 2 * 2 * (3 + 9 + 9 + 9 + 3) == counter.get_total_flops()
    assert ours["compress"] + ours["g_s"] == forward == ours["decompress"] + ours["g_a"] + ours["h_a"]


def test_gemm_rate_is_a_positive_figure():
    assert gemm_rate(np.float32, n=256, repeat=1) > 0 and gemm_rate(np.float64, n=256, repeat=1) > 0
