"""Memory the tick line reports: this process's resident memory and the GPU's peak allocations.

The release reads resident memory through psutil; here it comes from /proc (Linux) or, elsewhere,
the peak resident size from `resource`, so psutil is not a dependency.
"""
import os

import torch

GIB = 2 ** 30


def cpu_memory_gb():
    """Resident memory of this process in GiB: current on Linux, peak elsewhere, 0 if unknown."""
    try:
        with open('/proc/self/statm') as file:
            resident_pages = int(file.read().split()[1])
        return resident_pages * os.sysconf('SC_PAGE_SIZE') / GIB
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
        import sys
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / GIB if sys.platform == 'darwin' else peak * 1024 / GIB  # bytes on macOS, KiB on Linux
    except (ImportError, OSError):
        return 0.0


def _is_cuda(device):
    return device is not None and device.type == 'cuda' and torch.cuda.is_available()


def gpu_memory_gb(device):
    """(peak allocated, peak reserved) GiB on `device` since the last `take_gpu_memory_peaks`; 0 off CUDA."""
    if not _is_cuda(device):
        return 0.0, 0.0
    return torch.cuda.max_memory_allocated(device) / GIB, torch.cuda.max_memory_reserved(device) / GIB


def take_gpu_memory_peaks(device):
    """Start new peaks, so each tick reports its own."""
    if _is_cuda(device):
        torch.cuda.reset_peak_memory_stats(device)
