"""The backend switch: the array code takes its module from its inputs.

Two checks that run on any CPU:
* static: the modules on the array path never call NumPy directly (`np.<function>`);
  only dtype names are allowed, since `np.float32` etc. are accepted by CuPy too.
  A call like `np.exp(x)` on a CuPy array would silently copy to the host (or fail),
  which is the bug this catches. Host-side helpers (table building, coding, image
  I/O, weight files) are NumPy by design and are listed below.
* the runtime never imports torch.
CuPy itself is exercised by tests/test_cupy.py where a GPU is present.
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "minstf"
DTYPE_NAMES = {"float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16",
               "uint32", "bool_", "ndarray", "dtype", "newaxis", "pi", "inf", "finfo", "iinfo"}
# (module, functions that may use NumPy because they run on the host by design)
ARRAY_MODULES = {
    "reference/ops.py": set(),
    "reference/swin.py": {"relative_position_index", "shift_attention_mask"},
    "kernels/ops.py": set(),
    "kernels/swin.py": set(),
    "kernels/layouts.py": {"matmul_into"},  # np.matmul(out=) on host arrays only
    "transforms.py": set(),
    "slices.py": set(),
    "model.py": {"__init__", "_input", "_z_indexes"},
    "entropy_models.py": {"pmf_to_quantized_cdf", "eb_pmf", "eb_tables", "gc_pmf", "gc_tables",
                          "_cdf_table", "_quantize_pmf", "_repair_zero_frequencies", "_scale_table",
                          "_sequential_repair"},
}


def numpy_calls(path, host_functions):
    """(line, function, attribute) for every `np.<attr>` outside host functions and dtype names."""
    tree = ast.parse(path.read_text())
    found = []

    def visit(node, func, host):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            func, host = node.name, host or node.name in host_functions  # nested defs inherit
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in ("np", "numpy") and node.attr not in DTYPE_NAMES
                and func is not None and not host):
            found.append((node.lineno, func, node.attr))
        for child in ast.iter_child_nodes(node):
            visit(child, func, host)

    visit(tree, None, False)
    return found


@pytest.mark.parametrize("module", sorted(ARRAY_MODULES))
def test_array_code_takes_its_module_from_inputs(module):
    calls = numpy_calls(PACKAGE / module, ARRAY_MODULES[module])
    assert not calls, f"{module} calls NumPy directly on the array path: {calls}"


def test_static_check_catches_a_bypass(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import numpy as np\ndef f(x):\n    return np.exp(x).astype(np.float32)\n")
    assert numpy_calls(bad, set()) == [(3, "f", "exp")]


def test_runtime_never_imports_torch(tmp_path):
    """Encode and decode a small image with the whole runtime; torch must stay unimported."""
    code = """
import sys, numpy as np
import minstf
from minstf.config import STFConfig
from minstf.synthetic import recipe_weights
from minstf.entropy_models import eb_tables, gc_tables
from minstf.model import STF
import minstf.cli, minstf.weights, minstf.checkpoint, minstf.codec
c = STFConfig(embed_dim=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), num_slices=4,
              max_support_slices=2, slice_hidden=(64, 48, 40, 32))
p = recipe_weights(c)
eb = {k.split('.', 1)[1]: v for k, v in p.items() if k.startswith('entropy_bottleneck.')}
m = STF(c, p, {**eb_tables(eb), **gc_tables()}, fingerprint='ab' * 32)
img = (np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8)
data, _ = minstf.encode_image(m, img)
out, _ = minstf.decode_image(m, data)
assert out.shape == img.shape
print('torch' in sys.modules)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
