from setuptools import find_packages, setup

setup(
    name="canon-equivariance",
    version="0.1.0",
    description="Fast, exact optimization-based canonicalization for model-agnostic equivariance (Triton + PyTorch)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["canon", "canon.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4",
        "numpy>=1.24",
        # Triton ships wheels for Linux only; the reference backend needs none.
        "triton>=3.0; platform_system == 'Linux'",
    ],
    extras_require={
        "test": ["pytest>=7", "pytest-benchmark>=4", "hypothesis>=6"],
        "bench": ["pytest-benchmark>=4", "matplotlib>=3.5"],
        "data": ["mlxtend>=0.22", "scikit-learn>=1.2"],
        "train": ["matplotlib>=3.5", "tqdm>=4.60", "mlxtend>=0.22", "scikit-learn>=1.2"],
        "dev": ["ruff>=0.5"],
    },
    entry_points={"console_scripts": ["canon-train=canon.train:main"]},
    classifiers=["Programming Language :: Python :: 3", "Framework :: PyTorch"],
)
