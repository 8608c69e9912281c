"""Install the StyleGAN2/StyleGAN3 research codebase: `pip install -e .[dev]`."""
import os

from setuptools import find_packages, setup

# Opt-in ahead-of-time build of the fused CUDA ops (ops/*.cu), for clusters whose compute nodes have
# no compiler: STYLEGAN_BUILD_OPS=1 pip install --no-build-isolation -e .  (needs torch and nvcc).
extension_kwargs = {}
if os.environ.get('STYLEGAN_BUILD_OPS') == '1':
    from ops.build import setup_extension
    extension_kwargs = setup_extension()

setup(
    name="stylegan",
    version="0.1.0",
    description="StyleGAN2 and StyleGAN3 in PyTorch: faithful networks, ops, training and metrics",
    packages=find_packages(include=["stylegan", "stylegan.*", "ops", "ops.*", "metrics", "metrics.*"]),
    package_data={"ops": ["*.cu", "*.cpp", "*.h"],  # compiled on first use on a GPU
                  "stylegan.serve": ["static/*"]},  # the explorer page of `python -m stylegan.serve`
    license="Apache-2.0",
    python_requires=">=3.9",
    install_requires=[
        "torch>=2.4",
        "torchvision",
        "numpy",
        "scipy",
        "torch-fidelity",
        "ninja",
        "matplotlib",
        "tqdm",
    ],
    extras_require={
        "dev": ["pytest", "selenium>=4.11"],  # selenium: tests/test_serve_browser.py (Chromium from the OS)
        "serve": ["fastapi>=0.110", "uvicorn>=0.29"],  # python -m stylegan.serve
    },
    **extension_kwargs,
)
