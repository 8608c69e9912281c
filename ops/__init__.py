"""Primitive ops of StyleGAN2/StyleGAN3: pure-PyTorch reference implementations, and fused
CUDA kernels (ops/*.cu) behind the ops registered with torch.library (`torch.ops.stylegan.*`).

Each submodule mirrors the module of the same name in the releases' `torch_utils.ops`, so
`from ops import upfirdn2d; upfirdn2d.setup_filter(...)` works as it did there:
  bias_act            bias + activation + gain + clamp
  upfirdn2d           FIR up/down-sampling (setup_filter, upfirdn2d, filter2d, upsample2d, downsample2d)
  filtered_lrelu      StyleGAN3's alias-free leaky ReLU
  conv2d_resample     convolution with FIR up/down-sampling
  modulated_conv2d    StyleGAN2's (de)modulated convolution
  grid_sample_gradfix grid_sample with a twice-differentiable backward
  dispatch            picks the implementation behind every `impl=` argument
  build               compiles the kernels (JIT with ninja, or from setup.py); STYLEGAN_OPS=auto|cuda|ref
  kernels             calls the compiled kernels (also the emulated build on CPU tensors)
  guard               checks each fused op against the reference the first time it runs

May import: torch, numpy, scipy and the standard library. The lowest layer: nothing of `stylegan`
or `metrics`.
"""

from . import dispatch, bias_act, upfirdn2d, filtered_lrelu, conv2d_resample, modulated_conv2d, grid_sample_gradfix

__all__ = ['dispatch', 'bias_act', 'upfirdn2d', 'filtered_lrelu', 'conv2d_resample', 'modulated_conv2d',
           'grid_sample_gradfix']
