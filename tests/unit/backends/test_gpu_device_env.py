"""The device scripts are right the first time: with only the device image's Python packages and the wheels
they carry (docs/gpu.md), every test they select collects, and every step of each script is bounded so that the
whole script fits the device machine's 600 s per call.

The collection runs in a child process whose imports are limited to the standard library, the device image's
packages (KINDS.md's list for the lent machines, 2026-11-17), the carried wheels and the repository itself: an
import of anything else (simplejpeg, boto3, moto ...) at collection time fails it, as it would on the device.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SCRIPTS = ("benchmarks/gpu/check.sh", "benchmarks/gpu/ceiling_check.sh", "benchmarks/gpu/pipelines_check.sh")
DEVICE_CALL_S = 600  # one command on the device machine
# The lent machines' image ('cuda'), as listed for this workplace on 2026-11-17 (distribution names).
DEVICE_IMAGE = re.findall(r"\S+", """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin
jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax
llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack
multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro
nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft
nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13
nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript opencv-python-headless
optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip
pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing
pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core
scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson
six sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl
tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision
tqdm transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug
wheel wrapt xarray xxhash yarl zipp
""")
CARRIED = ["pyvips", "pyvips-binary", "cffi", "pycparser", "nvidia-nvimgcodec-cu13", "nvidia-nvjpeg"]  # docs/gpu.md
# Distribution -> the top-level modules it installs, where that is not the name with "-" as "_".
MODULES = {
    "pyyaml": ["yaml", "_yaml"], "pillow": ["PIL"], "opencv-python-headless": ["cv2"], "absl-py": ["absl"],
    "cupy-cuda13x": ["cupy", "cupy_backends", "cupyx"], "python-dateutil": ["dateutil"], "attrs": ["attr", "attrs"],
    "scikit-image": ["skimage"], "scikit-learn": ["sklearn"], "nvidia-ml-py": ["pynvml"], "py-cpuinfo": ["cpuinfo"],
    "protobuf": ["google"], "pytest": ["pytest", "_pytest", "py"], "pytest-xdist": ["xdist"],
    "hypothesis": ["hypothesis", "_hypothesis_pytestplugin", "_hypothesis_globals", "_hypothesis_ftz_detector"],
    "setuptools": ["setuptools", "_distutils_hack", "pkg_resources"], "markdown-it-py": ["markdown_it"],
    "cuda-bindings": ["cuda"], "cuda-core": ["cuda"], "cuda-pathfinder": ["cuda"], "pyvips-binary": ["_libvips"],
    "cffi": ["cffi", "_cffi_backend"], "typing-extensions": ["typing_extensions"],
}
PROJECT = ["imgworker", "benchmarks", "support", "unit", "integration", "gpu", "conftest"]


def allowed_modules() -> set[str]:
    names = set(sys.stdlib_module_names) | set(PROJECT) | {"__main__", "sitecustomize", "usercustomize"}
    for dist in DEVICE_IMAGE + CARRIED:
        names.update(MODULES.get(dist, ["nvidia"] if dist.startswith("nvidia-") else [dist.replace("-", "_")]))
    return names


def script_text(script: str) -> str:
    """The script with the env.sh it sources, comments dropped."""
    text = (REPO / script).read_text() + "\n" + (REPO / "benchmarks/gpu/env.sh").read_text()
    return "\n".join(line.split(" #")[0] for line in text.splitlines() if not line.lstrip().startswith("#"))


def gpu_tests(script: str) -> list[str]:
    found = re.search(r'^GPU_TESTS="([^"]*)"', (REPO / script).read_text(), re.M)
    assert found, f"{script}: no GPU_TESTS=\"...\" (the explicit list of tests it runs)"
    return found.group(1).split()


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_step_is_bounded_and_the_script_fits_one_device_call(script: str) -> None:
    text = script_text(script)
    limits = [int(n) for n in re.findall(r"(?<!-)\btimeout (\d+)\b", text)]  # not pytest's --timeout
    assert sum(limits) < DEVICE_CALL_S, f"{script}: timeouts add up to {sum(limits)} s ({limits})"
    for line in text.splitlines():  # every Python, pytest, pip and nvidia-smi run is under a timeout
        if re.search(r'"\$PY"|^\s*(\{ )?nvidia-smi\b', line):
            assert re.search(r"(?<!-)\btimeout \d+ ", line), f"{script}: unbounded: {line.strip()}"
    runs = [line for line in text.splitlines() if "-m pytest" in line]
    assert runs and all("$GPU_TESTS" in r and "--timeout" in r and "-m gpu" in r for r in runs), runs
    assert "tests/test_gpu_" not in text  # the layout before tests/gpu/: that glob selects nothing now
    cd = re.search(r'^cd "\$\(dirname "\$0"\)/([^"]*)"', (REPO / script).read_text(), re.M)
    assert cd and ((REPO / script).parent / cd.group(1)).resolve() == REPO, f"{script} must cd to the repo root"


def collect(nodes: list[str]) -> tuple[int, str]:
    """``pytest --collect-only -m gpu nodes`` in a child whose imports are limited to the device's packages."""
    blocker = textwrap.dedent(f"""
        import importlib.abc, sys
        ALLOWED = {sorted(allowed_modules())!r}
        class DeviceImage(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                top = name.partition(".")[0]
                if path is None and top not in ALLOWED and not top.startswith("_sysconfigdata"):  # stdlib's
                    raise ModuleNotFoundError(f"No module named {{top!r}} (not on the device image, not carried)",
                                              name=top)
                return None
        sys.meta_path.insert(0, DeviceImage())
        import pytest
        sys.exit(pytest.main(sys.argv[1:]))
    """)
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}  # the device's plugins are loaded by name below
    args = ["-p", "pytest_timeout", "-p", "no:cacheprovider", "--collect-only", "-q", "-m", "gpu",
            "--rootdir", str(REPO), *nodes]
    done = subprocess.run([sys.executable, "-c", blocker, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=240)
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_selected_tests_collect_with_only_the_device_packages(script: str) -> None:
    selected = gpu_tests(script)
    for node in selected:
        assert (REPO / node.split("::")[0]).is_file(), f"{script}: {node} does not exist"
    rc, out = collect(selected)
    assert rc == 0, f"{script}: collection failed with the device's packages:\n{out[-3000:]}"
    count = len([ln for ln in out.splitlines() if "::" in ln])
    assert count > 0, f"{script}: -m gpu selects no test:\n{out[-2000:]}"


def test_a_test_that_imports_what_the_device_lacks_fails_the_collection(tmp_path: Path) -> None:
    """Negative control: the same collection fails for a test file that imports boto3 (not on the device)."""
    probe = REPO / "tests" / "gpu" / f"test_probe_{os.getpid()}.py"
    probe.write_text("import boto3\nimport pytest\n\npytestmark = pytest.mark.gpu\n\n\ndef test_x():\n    pass\n")
    try:
        rc, out = collect([str(probe.relative_to(REPO))])
    finally:
        probe.unlink()
    assert rc != 0 and "No module named 'boto3'" in out, out[-2000:]
    assert {"numpy", "cupy", "pyvips", "yaml", "pytest", "nvidia", "prometheus_client"} <= allowed_modules()
