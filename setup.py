"""Install the StyleGAN2/StyleGAN3 research codebase: `pip install -e .[dev]`."""
from setuptools import setup

setup(
    name="stylegan",
    version="0.1.0",
    description="StyleGAN2 and StyleGAN3 in PyTorch: faithful networks, ops, training and metrics",
    packages=["stylegan", "stylegan.networks", "ops", "metrics"],
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
    extras_require={"dev": ["pytest"]},
)
