import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent


def read_version() -> str:
    # canon/_version.py is the one version source; read as text so building needs no torch.
    text = (HERE / "canon" / "_version.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__\s*=\s*"([^"]+)"', text, re.MULTILINE)
    if match is None:
        raise RuntimeError('setup.py: canon/_version.py must define __version__ = "X.Y.Z"')
    return match.group(1)


EXPORT = ["onnx>=1.16", "onnxscript>=0.2", "onnxruntime>=1.18"]

setup(
    name="canon-equivariance",
    version=read_version(),
    description="Fast, exact optimization-based canonicalization for model-agnostic equivariance (Triton + PyTorch)",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    license_files=["LICENSE"],
    # Only `canon` is installed: kernels/ is reached as canon.kernels (a symlink), bench/ stays in the checkout.
    packages=find_packages(include=["canon", "canon.*"]),
    package_data={"canon": ["py.typed"]},
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4",
        "numpy>=1.24",
    ],
    extras_require={
        # The Triton kernels (CUDA tensors). CUDA builds of torch already bring triton; the
        # reference backend (CPU, and any device without triton) needs none.
        "gpu": ["triton>=3.0; platform_system == 'Linux'"],
        "export": EXPORT,
        # setuptools: tests/test_packaging.py builds the wheel offline (--no-build-isolation)
        "test": ["pytest>=7", "pytest-benchmark>=4", "pytest-xdist>=3", "hypothesis>=6", "setuptools>=70.1", *EXPORT],
        "bench": ["pytest-benchmark>=4", "matplotlib>=3.5"],
        "data": ["mlxtend>=0.22", "scikit-learn>=1.2"],
        "train": ["matplotlib>=3.5", "tqdm>=4.60", "mlxtend>=0.22", "scikit-learn>=1.2"],
        "dev": ["ruff>=0.5"],
        # the equivariant-canonicalizer baseline of the training CLI (--methods equivariant); pure Python
        "equivariant": ["e2cnn>=0.2.3"],
        # --dataset elpv: 2,624 solar-cell images inside the wheel (~92 MB; data licence
        # CC-BY-NC-SA 4.0, non-commercial)
        "elpv": ["elpv-dataset>=1.0"],
        # --dataset textures: three CC0 photographs inside the scikit-image wheel
        "textures": ["scikit-image>=0.19"],
    },
    entry_points={"console_scripts": ["canon-train=canon.train:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Framework :: PyTorch",
        "Operating System :: OS Independent",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Typing :: Typed",
    ],
)
