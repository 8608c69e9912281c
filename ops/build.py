"""Building the fused CUDA kernels: toolkit discovery, target architectures, a build cache
keyed by everything that changes the binary, a lock that survives killed builds, and one
clear paragraph when anything fails.

The kernels (`ops/*.cu`) include only CUDA headers and export plain C functions, so they
compile in seconds per architecture and are called through ctypes (`ops/kernels.py`).
They are compiled either just in time with `torch.utils.cpp_extension.load` (ninja) on first
use, or ahead of time by `setup.py` when STYLEGAN_BUILD_OPS=1 (see `setup_extension`).

The emulated build: the same KERNEL_SOURCES, compiled by the host C++ compiler with
STYLEGAN_EMULATED defined, so that ops/cuda_compat.h includes the project's CUDA emulation
ops/emu/cuda_emu.h instead of the CUDA headers (each .cu through a generated one-line .cpp that
#includes it). Threads of a block run as fibers with real barriers, in a permuted order, on
poisoned shared memory, so races and missing barriers give wrong results as on a GPU. It needs no
toolkit or GPU, builds in seconds (-O1) into its own cache folder (`<name>_emulated-<key>`, same
lock and markers), and runs the kernels on CPU tensors through the same ctypes interface:
    from ops import kernels
    k = kernels.emulated_kernels()           # FusedKernels of the emulated library
    with kernels.use_emulated(k):            # bias_act/upfirdn2d/filtered_lrelu on CPU tensors
        y = upfirdn2d.upfirdn2d(x, f, up=2)  # now run the fused kernels
The kernel tests run against it on every machine (tests/test_ops_cuda_kernels.py). What kernel
code may use from CUDA is listed in ops/emu/cuda_emu.h (the contract: launches only through
`stylegan_launch`, dynamic shared memory only through STYLEGAN_DYNAMIC_SHARED).

Environment:
  STYLEGAN_OPS            auto (default: build, fall back to the reference ops on failure),
                          cuda (strict: a failed build is an error), ref (never build).
  STYLEGAN_OPS_CACHE      build cache root (default: $XDG_CACHE_HOME/stylegan/ops or ~/.cache/...).
  CUDA_HOME / CUDA_PATH   CUDA toolkit root (default: found from nvcc on PATH or /usr/local/cuda*).
  TORCH_CUDA_ARCH_LIST    target architectures, e.g. "8.0;9.0" (default: the visible GPUs).
  STYLEGAN_EMU_SEED       the emulation's thread-order seed (default 1; fixed, so failures reproduce).
"""

import contextlib
import ctypes
import dataclasses
import glob
import hashlib
import os
import pathlib
import re
import sys
import time
import traceback
from typing import Callable, Mapping, Optional, Sequence

import torch

try:
    import fcntl  # POSIX advisory locks: released by the kernel when the holder dies
except ImportError:  # pragma: no cover - Windows has no fcntl; builds there are unlocked
    fcntl = None

OPS_DIR = pathlib.Path(__file__).resolve().parent
LIBRARY_NAME = 'stylegan_fused_ops'
# Compiled together into one library; the header is hashed so that editing it rebuilds.
KERNEL_SOURCES = ('cuda_compat.h', 'fused_ops.h', 'fused_ops.cpp', 'bias_act.cu', 'upfirdn2d.cu', 'resample_tile.h',
                  'filtered_lrelu.cu')
# The emulated build adds the CPU emulation of CUDA (ops/emu) to KERNEL_SOURCES.
EMULATION_SOURCES = ('emu/cuda_emu.h', 'emu/cuda_emu.cpp')
# -O1: the emulated library is compiled in every fresh `make test`; -O2 barely runs the small
# test cases faster and compiles slower.
EMULATED_CXX_FLAGS = ('-O1', '-DSTYLEGAN_EMULATED', '-Wno-unknown-pragmas')
GRID_CAP_MACRO = 'STYLEGAN_MAX_GRID_Z'  # the kernels' cap on grid z (ops/fused_ops.h), if they have one
# Architectures compiled when no GPU is visible and TORCH_CUDA_ARCH_LIST is unset (A100, H100;
# the PTX lets newer GPUs JIT-compile the sm_90 code).
DEFAULT_ARCH_LIST = '8.0;9.0+PTX'
MODES = ('auto', 'cuda', 'ref')
_ARCH_PATTERN = re.compile(r'^\d+\.\d+(\+PTX)?$')


class OpsBuildError(RuntimeError):
    """The fused kernels could not be built or loaded; `log_path` holds the full output."""

    def __init__(self, message, log_path=None):
        super().__init__(message)
        self.log_path = log_path


def ops_mode(environ: Mapping[str, str] = os.environ) -> str:
    """STYLEGAN_OPS -> 'auto' | 'cuda' | 'ref' (unset or empty = 'auto')."""
    mode = environ.get('STYLEGAN_OPS', '').strip().lower() or 'auto'
    if mode not in MODES:
        raise ValueError(f"STYLEGAN_OPS must be one of {MODES}, got {environ.get('STYLEGAN_OPS')!r}.")
    return mode


# ----------------------------------------------------------------------------------------------
# Toolkit and headers.

@dataclasses.dataclass(frozen=True)
class CudaToolkit:
    root: pathlib.Path
    version: str  # 'major.minor', read from include/cuda.h

    @property
    def nvcc(self):
        return self.root / 'bin' / 'nvcc'


def is_toolkit_root(path) -> bool:
    path = pathlib.Path(path)
    return (path / 'bin' / 'nvcc').is_file() and (path / 'include' / 'cuda.h').is_file()


def toolkit_version(root) -> str:
    """'13.0' from `#define CUDA_VERSION 13000` in include/cuda.h."""
    text = (pathlib.Path(root) / 'include' / 'cuda.h').read_text(errors='replace')
    match = re.search(r'#define\s+CUDA_VERSION\s+(\d+)', text)
    if not match:
        raise OpsBuildError(f"{root}/include/cuda.h has no CUDA_VERSION define; is it a CUDA toolkit?")
    number = int(match.group(1))
    return f'{number // 1000}.{number % 1000 // 10}'


def _roots_named_by_nvcc(nvcc_path) -> list:
    """Toolkit roots an `nvcc` on PATH points at: the folder above its real location, or, when it
    is a wrapper script (`exec /usr/local/cuda-13.0/bin/nvcc "$@"`), the roots it names."""
    real = pathlib.Path(os.path.realpath(nvcc_path))
    roots = [real.parent.parent]
    try:
        head = real.read_bytes()[:65536]
    except OSError:
        return roots
    if head.startswith(b'#!'):
        for named in re.findall(rb'(/[^\s\'"]+)/bin/nvcc\b', head):
            roots.append(pathlib.Path(os.path.realpath(named.decode(errors='replace'))))
    return roots


def _version_sort_key(path):
    return [int(n) for n in re.findall(r'\d+', path.name)] or [0]


def find_cuda_toolkit(environ: Mapping[str, str] = os.environ, which: Optional[Callable] = None,
                      search_roots: Sequence[str] = ('/usr/local', '/opt')) -> CudaToolkit:
    """The CUDA toolkit root: a folder with both bin/nvcc and include/cuda.h.

    Looks at CUDA_HOME, CUDA_PATH, the nvcc on PATH (following links and wrapper scripts),
    then cuda and cuda-X.Y folders under `search_roots` (newest first).
    """
    import shutil
    which = which or shutil.which
    candidates = []
    for var in ('CUDA_HOME', 'CUDA_PATH'):
        if environ.get(var):
            candidates.append(pathlib.Path(environ[var]))
    nvcc = which('nvcc')
    if nvcc:
        candidates.extend(_roots_named_by_nvcc(nvcc))
    for base in search_roots:
        candidates.append(pathlib.Path(base) / 'cuda')
        candidates.extend(sorted(pathlib.Path(base).glob('cuda-*'), key=_version_sort_key, reverse=True))
    for root in candidates:
        if is_toolkit_root(root):
            return CudaToolkit(root=root.resolve(), version=toolkit_version(root))
    looked = ', '.join(dict.fromkeys(str(c) for c in candidates)) or 'nothing (no CUDA_HOME, no nvcc on PATH)'
    raise OpsBuildError(f"no CUDA toolkit found (a folder with bin/nvcc and include/cuda.h); looked at {looked}.")


def wheel_include_dirs(site_dirs: Optional[Sequence[str]] = None) -> list:
    """include/ folders of the nvidia-* pip wheels installed beside torch (nvidia/cu13/include,
    nvidia/cuda_runtime/include, ...): some headers exist only there, not in the toolkit."""
    if site_dirs is None:
        site_dirs = [str(pathlib.Path(torch.__file__).resolve().parent.parent)]
    found = []
    for site_dir in site_dirs:
        found.extend(sorted(glob.glob(os.path.join(site_dir, 'nvidia', '*', 'include'))))
    return [pathlib.Path(d) for d in dict.fromkeys(found) if os.path.isdir(d)]


# ----------------------------------------------------------------------------------------------
# Architectures and cache key.

def visible_gpu_archs() -> list:
    """'major.minor' of every visible GPU (empty without one)."""
    if not torch.cuda.is_available():
        return []
    return [f'{major}.{minor}' for major, minor in
            (torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count()))]


def pick_arch_list(environ: Mapping[str, str] = os.environ, gpu_archs: Optional[Sequence[str]] = None) -> str:
    """TORCH_CUDA_ARCH_LIST if set, else the visible GPUs' architectures, else DEFAULT_ARCH_LIST."""
    requested = environ.get('TORCH_CUDA_ARCH_LIST', '').strip()
    if requested:
        archs = [a for a in re.split(r'[;\s]+', requested) if a]
        bad = [a for a in archs if not _ARCH_PATTERN.match(a)]
        if bad:
            raise OpsBuildError(f"TORCH_CUDA_ARCH_LIST entries must look like '8.0' or '9.0+PTX', got {bad}.")
        return ';'.join(archs)
    gpu_archs = visible_gpu_archs() if gpu_archs is None else list(gpu_archs)
    if gpu_archs:
        return ';'.join(sorted(set(gpu_archs), key=lambda a: tuple(int(n) for n in a.split('.'))))
    return DEFAULT_ARCH_LIST


def length_prefixed(*fields: bytes) -> bytes:
    """The fields each preceded by its 8-byte length, so no two different lists of fields hash alike
    (names and bytes joined by a separator could: the bytes may hold the separator)."""
    return b''.join(len(field).to_bytes(8, 'little') + field for field in fields)


def source_hash(sources: Sequence[pathlib.Path]) -> str:
    digest = hashlib.sha256()
    for path in sources:
        digest.update(length_prefixed(pathlib.Path(path).name.encode(), pathlib.Path(path).read_bytes()))
    return digest.hexdigest()


def cache_key(sources, torch_version, cuda_version, arch_list, flags=()) -> str:
    """Hex key of everything that changes the binary; a change means a fresh build folder."""
    parts = [source_hash(sources), torch_version, cuda_version, arch_list, *flags]
    return hashlib.sha256(length_prefixed(*(part.encode() for part in parts))).hexdigest()[:16]


def default_cache_root(environ: Mapping[str, str] = os.environ) -> pathlib.Path:
    if environ.get('STYLEGAN_OPS_CACHE'):
        return pathlib.Path(environ['STYLEGAN_OPS_CACHE'])
    base = environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return pathlib.Path(base) / 'stylegan' / 'ops'


# ----------------------------------------------------------------------------------------------
# Lock and build.

@contextlib.contextmanager
def build_lock(lock_path, on_wait: Optional[Callable[[], None]] = None):
    """Exclusive lock on `lock_path` for the duration of the block.

    An flock is held by the open file, so the kernel drops it when the holder exits or is
    killed: a killed build never leaves a lock behind. Other processes block until it is free.
    """
    lock_path = pathlib.Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, 'a+') as handle:
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait is not None:
                    on_wait()
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def _output_to(log_path):
    """Send this process's stdout and stderr (including the compiler's) to `log_path`."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, 'ab') as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


@contextlib.contextmanager
def _environment(**values):
    """Set environment variables (and torch's cached CUDA_HOME) for the duration of a build."""
    import torch.utils.cpp_extension as cpp_extension
    old_env = {k: os.environ.get(k) for k in values}
    old_cuda_home = cpp_extension.CUDA_HOME
    os.environ.update({k: v for k, v in values.items() if v is not None})
    if values.get('CUDA_HOME'):
        cpp_extension.CUDA_HOME = values['CUDA_HOME']  # read once at import, from a guess
    try:
        yield
    finally:
        cpp_extension.CUDA_HOME = old_cuda_home
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclasses.dataclass(frozen=True)
class BuildSpec:
    """Everything one build needs; `key` names its cache folder."""
    name: str
    sources: tuple
    cache_root: pathlib.Path
    toolkit: Optional[CudaToolkit]
    arch_list: str
    include_dirs: tuple = ()
    emulated: bool = False  # host C++ with ops/emu instead of nvcc (toolkit None, arch_list 'host')
    defines: tuple = ()     # extra -D flags (tests build deliberately wrong libraries with them)

    @property
    def flags(self):
        """Compiler flags shared by the JIT and the setup.py build."""
        hash_define = f'-DSTYLEGAN_OPS_SOURCE_HASH=h{source_hash(self.sources)[:16]}'
        if self.emulated:
            # Few z-blocks, so that blocks loop over planes: the loop's second pass (and the
            # barrier ordering it after the first) runs in every test, as it rarely does on a GPU.
            grid_cap = ['-DSTYLEGAN_MAX_GRID_Z=2'] if any(
                GRID_CAP_MACRO in pathlib.Path(s).read_text(errors='replace') for s in self.sources) else []
            return {'cxx': [*EMULATED_CXX_FLAGS, *grid_cap, hash_define, *(f'-D{d}' for d in self.defines),
                            *(f'-I{d}' for d in self.include_dirs)], 'nvcc': []}
        # -isystem folders are searched after -I and after the toolkit's own include folder.
        system_includes = [flag for d in self.include_dirs for flag in ('-isystem', str(d))]
        return {'cxx': ['-O3', hash_define] + system_includes,
                'nvcc': ['-O3', '-std=c++17', '-lineinfo', hash_define] + system_includes}

    @property
    def key(self):
        cuda_version = self.toolkit.version if self.toolkit else ('emulated' if self.emulated else 'none')
        return cache_key(self.sources, torch.__version__, cuda_version, self.arch_list,
                         self.flags['cxx'] + self.flags['nvcc'])

    @property
    def build_dir(self):
        return pathlib.Path(self.cache_root) / f'{self.name}-{self.key}'


@dataclasses.dataclass(frozen=True)
class BuildResult:
    library_path: pathlib.Path
    compiled: bool  # False when an earlier build (possibly by another process) was reused


def build_library(spec: BuildSpec, verbose=False) -> BuildResult:
    """Compile `spec` into a shared library in its cache folder, or reuse the one there.

    One process compiles while the others wait on the lock; they then reuse its library, or
    its failure if it failed while they waited (so eight ranks do not fail eight times).
    """
    build_dir = spec.build_dir
    build_dir.mkdir(parents=True, exist_ok=True)
    built_marker, failed_marker = build_dir / 'BUILT', build_dir / 'FAILED'
    log_path = build_dir / 'build.log'
    wait_started = time.time()

    def announce_wait():
        print(f"stylegan ops: waiting for another process that is compiling in {build_dir} ...", file=sys.stderr)

    with build_lock(build_dir / 'build.lock', on_wait=announce_wait):
        if built_marker.is_file() and pathlib.Path(built_marker.read_text().strip()).is_file():
            return BuildResult(pathlib.Path(built_marker.read_text().strip()), compiled=False)
        if failed_marker.is_file() and failed_marker.stat().st_mtime >= wait_started - 1:
            raise OpsBuildError(failed_marker.read_text().strip(), log_path)
        failed_marker.unlink(missing_ok=True)
        stale_torch_lock = build_dir / 'lock'  # torch < 2.12 leaves it behind when a build is killed
        stale_torch_lock.unlink(missing_ok=True)
        log_path.write_text(_build_header(spec))
        try:
            library_path = _compile(spec, build_dir, log_path, verbose)
        except Exception as error:  # compiler errors arrive as RuntimeError, subprocess errors, ...
            reason = _first_line(error)
            with open(log_path, 'a') as log:
                log.write('\n' + ''.join(traceback.format_exception(type(error), error, error.__traceback__)))
            failed_marker.write_text(reason)
            raise OpsBuildError(reason, log_path) from error
        built_marker.write_text(str(library_path))
        return BuildResult(library_path, compiled=True)


def _build_header(spec):
    toolkit = f'{spec.toolkit.root} (CUDA {spec.toolkit.version})' if spec.toolkit else 'none'
    return (f'# {spec.name}: torch {torch.__version__} (CUDA {torch.version.cuda}), toolkit {toolkit}, '
            f'TORCH_CUDA_ARCH_LIST={spec.arch_list}\n# sources: {", ".join(str(s) for s in spec.sources)}\n')


def _first_line(error):
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _compile(spec, build_dir, log_path, verbose):
    import torch.utils.cpp_extension as cpp_extension
    compiled_sources = [str(s) for s in spec.sources if pathlib.Path(s).suffix in ('.cu', '.cpp', '.cc')]
    if spec.emulated:
        compiled_sources = [_host_wrapper(s, build_dir) if s.endswith('.cu') else s for s in compiled_sources]
    with_cuda = any(s.endswith('.cu') for s in compiled_sources)
    ldflags = ['-Wl,-Bsymbolic'] if spec.emulated else []  # two emulated libraries can share a process
    if spec.toolkit is not None:
        lib_dir = spec.toolkit.root / 'lib64'
        ldflags = [f'-L{lib_dir}', f'-Wl,-rpath,{lib_dir}']  # the toolkit's cudart, even beside torch's
    cuda_home = str(spec.toolkit.root) if spec.toolkit else None
    arch_list = None if spec.emulated else spec.arch_list
    with _environment(CUDA_HOME=cuda_home, TORCH_CUDA_ARCH_LIST=arch_list), _output_to(log_path):
        path = cpp_extension.load(
            name=spec.name, sources=compiled_sources, extra_cflags=spec.flags['cxx'],
            extra_cuda_cflags=spec.flags['nvcc'], extra_ldflags=ldflags, build_directory=str(build_dir),
            verbose=True, with_cuda=with_cuda, is_python_module=False)
    return pathlib.Path(path)


def _host_wrapper(cu_source, build_dir):
    """A one-line .cpp that #includes a .cu, so the host compiler builds it as C++ (its own
    #include "..." lines still resolve beside the .cu)."""
    wrapper = pathlib.Path(build_dir) / f'{pathlib.Path(cu_source).stem}_cu.cpp'
    wrapper.write_text(f'#include "{pathlib.Path(cu_source).resolve()}"\n')
    return str(wrapper)


# ----------------------------------------------------------------------------------------------
# The project's kernels.

def kernel_sources(source_dir=None) -> tuple:
    return tuple(pathlib.Path(source_dir or OPS_DIR) / name for name in KERNEL_SOURCES)


def emulated_sources(source_dir=None) -> tuple:
    return kernel_sources(source_dir) + tuple(pathlib.Path(source_dir or OPS_DIR) / n for n in EMULATION_SOURCES)


def kernel_build_spec(environ: Mapping[str, str] = os.environ, cache_root=None) -> BuildSpec:
    """The BuildSpec of ops/*.cu for this machine (raises OpsBuildError without a toolkit)."""
    toolkit = find_cuda_toolkit(environ)
    return BuildSpec(name=LIBRARY_NAME, sources=kernel_sources(),
                     cache_root=pathlib.Path(cache_root) if cache_root else default_cache_root(environ),
                     toolkit=toolkit, arch_list=pick_arch_list(environ),
                     include_dirs=tuple(wheel_include_dirs()))


def emulated_build_spec(environ: Mapping[str, str] = os.environ, cache_root=None, source_dir=None,
                        defines=()) -> BuildSpec:
    """The BuildSpec of ops/*.cu compiled for the CPU with ops/emu (no toolkit needed).
    `source_dir` holds a copy of ops/ to build instead (the mutation tests' edited sources)."""
    return BuildSpec(name=LIBRARY_NAME + '_emulated', sources=emulated_sources(source_dir),
                     cache_root=pathlib.Path(cache_root) if cache_root else default_cache_root(environ),
                     toolkit=None, arch_list='host', emulated=True, defines=tuple(defines))


def load_emulated_library(environ: Mapping[str, str] = os.environ, cache_root=None, source_dir=None,
                          defines=()) -> ctypes.CDLL:
    """The emulated build of ops/*.cu (compiled on first use, then cached like the CUDA build)."""
    spec = emulated_build_spec(environ, cache_root, source_dir, defines)
    result = build_library(spec)
    library = ctypes.CDLL(str(result.library_path))
    if library_source_hash(library) != 'h' + source_hash(spec.sources)[:16]:
        raise OpsBuildError(f"{result.library_path} does not match the sources in {spec.sources[0].parent}.")
    return library


def emulated_failure_message(error: OpsBuildError) -> str:
    """The one paragraph when the emulated build fails (a compiler error in ops/*.cu as C++, or a
    construct the emulation does not provide: see ops/emu/cuda_emu.h)."""
    log = f" The full log is in {error.log_path}." if error.log_path else ''
    return (f"stylegan ops: building the emulated kernels (ops/*.cu compiled for the CPU with ops/emu/cuda_emu.h) "
            f"failed: {str(error).rstrip('.')}.{log} The kernels may use only what the emulation provides (listed in "
            f"ops/emu/cuda_emu.h); a C++ compiler (c++ or $CXX) and ninja are needed. Delete "
            f"{default_cache_root()} to rebuild from scratch.")


def prebuilt_library_path(sources=None) -> Optional[pathlib.Path]:
    """The library setup.py built into ops/ (STYLEGAN_BUILD_OPS=1), if any."""
    matches = sorted(OPS_DIR.glob('_fused_ops*.so'))
    return matches[0] if matches else None


def library_source_hash(library: ctypes.CDLL) -> str:
    library.stylegan_ops_source_hash.restype = ctypes.c_char_p
    return library.stylegan_ops_source_hash().decode()


def load_kernel_library(environ: Mapping[str, str] = os.environ, cache_root=None) -> ctypes.CDLL:
    """The compiled ops/*.cu: the setup.py build if its sources match, else a JIT build."""
    expected_hash = 'h' + source_hash(kernel_sources())[:16]
    prebuilt = prebuilt_library_path()
    if prebuilt is not None:
        library = ctypes.CDLL(str(prebuilt))
        if library_source_hash(library) == expected_hash:
            return library
        print(f"stylegan ops: {prebuilt} was built from other sources; compiling the current ones.", file=sys.stderr)
    result = build_library(kernel_build_spec(environ, cache_root))
    library = ctypes.CDLL(str(result.library_path))
    if library_source_hash(library) != expected_hash:
        raise OpsBuildError(f"{result.library_path} does not match the sources in {OPS_DIR}.")
    return library


def fallback_message(error: OpsBuildError) -> str:
    """The one paragraph printed when the build fails and the reference ops take over."""
    log = f" The full log is in {error.log_path}." if error.log_path else ''
    return (f"stylegan ops: building the fused CUDA kernels (bias_act, upfirdn2d, filtered_lrelu) failed: "
            f"{error}.{log} To fix it, point CUDA_HOME at a CUDA toolkit root (a folder with bin/nvcc and "
            f"include/cuda.h; torch was built with CUDA {torch.version.cuda}), set TORCH_CUDA_ARCH_LIST to your "
            f"GPUs' architectures (e.g. '8.0;9.0'), or delete {default_cache_root()} to rebuild from scratch. "
            f"Set STYLEGAN_OPS=ref to use the reference ops without trying, or STYLEGAN_OPS=cuda to make this "
            f"an error. Continuing with the reference ops (same results, slower).")


# ----------------------------------------------------------------------------------------------
# Ahead-of-time build from setup.py.

def setup_extension(environ: Mapping[str, str] = os.environ) -> dict:
    """`setup()` keyword arguments that compile ops/*.cu into ops/_fused_ops*.so.

    Used by setup.py when STYLEGAN_BUILD_OPS=1, for clusters whose compute nodes lack a compiler.
    """
    spec = kernel_build_spec(environ)
    os.environ['CUDA_HOME'] = str(spec.toolkit.root)
    os.environ['TORCH_CUDA_ARCH_LIST'] = spec.arch_list
    import torch.utils.cpp_extension as cpp_extension
    cpp_extension.CUDA_HOME = str(spec.toolkit.root)
    repo_root = OPS_DIR.parent
    sources = [str(s.relative_to(repo_root)) for s in spec.sources if s.suffix in ('.cu', '.cpp')]
    lib_dir = spec.toolkit.root / 'lib64'
    extension = cpp_extension.CUDAExtension(
        name='ops._fused_ops', sources=sources, extra_compile_args=spec.flags,
        extra_link_args=[f'-L{lib_dir}', f'-Wl,-rpath,{lib_dir}'])
    return {'ext_modules': [extension],
            'cmdclass': {'build_ext': cpp_extension.BuildExtension.with_options(use_ninja=True)}}
