"""Build of advinterp-gridablate (metadata: setup.cfg).

Two optional compiled modules, built against the torch of the environment::

    advinterp_gridablate._C       the op schemas + C++ CPU kernels (at::parallel_for)
    advinterp_gridablate._C_cuda  the CUDA kernels, where torch is a CUDA build and nvcc is found
                                  (no GPU needed to compile)

Install with the environment's torch, so pip must not build in an isolated environment::

    pip install --no-build-isolation -e plugins/advinterp-gridablate

Environment variables:
    TORCH_CUDA_ARCH_LIST        CUDA architectures (default "7.5;8.0;9.0+PTX": Turing, Ampere,
                                Hopper, and PTX that newer GPUs compile at load time).
    ADVINTERP_GRIDABLATE_CUDA   "auto" (default) or "0" (do not build the CUDA kernels).
    MAX_JOBS                    parallel compile jobs (ninja).

Nothing here fails the install: where torch cannot be imported (an isolated build), a compiler
is missing or a compilation fails, the package installs without that module, the reason is
written to ``advinterp_gridablate/_build_info.json``, ``advinterp list`` shows it, and the
core's pure-PyTorch reference serves the grid ablation instead.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
import traceback

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE = "advinterp_gridablate"
INFO_FILE = "_build_info.json"
DEFAULT_ARCH_LIST = "7.5;8.0;9.0+PTX"
CSRC = "csrc"


def _short(exc: BaseException, limit: int = 600) -> str:
    """One line for an exception; compiler output is in the pip log (pip install -v)."""
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip().replace("\n", " | ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _write_info(directory: str, info: dict) -> None:
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, INFO_FILE), "w") as f:
        json.dump(info, f, indent=2, sort_keys=True)


def _no_torch_setup(reason: str) -> None:
    pkg = os.path.join(HERE, PACKAGE)
    # (shipped as package data; not over the record of a compiled module already built in place)
    if not any(f.startswith("_C") and f.endswith((".so", ".pyd")) for f in os.listdir(pkg)):
        _write_info(pkg, {"torch": None, "modules": {"_C": {"built": False, "reason": reason},
                                                     "_C_cuda": {"built": False, "reason": reason}}})
    print(f"advinterp-gridablate: building no compiled module: {reason}", file=sys.stderr)
    setup()


def _cuda_plan(torch, cpp_extension) -> str | None:
    """``None`` if the CUDA kernels can be built here, else why not."""
    if os.environ.get("ADVINTERP_GRIDABLATE_CUDA", "auto").strip().lower() in ("0", "no", "false", "off"):
        return "disabled by ADVINTERP_GRIDABLATE_CUDA=0"
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is not a CUDA build"
    home = _cuda_home(cpp_extension.CUDA_HOME)
    if home is None:
        return "no CUDA toolkit (nvcc and include/cuda_runtime.h) found; set CUDA_HOME to build the CUDA kernels"
    if home != cpp_extension.CUDA_HOME:  # torch guessed from a wrapper script on PATH (e.g. /usr/local/bin/nvcc)
        cpp_extension.CUDA_HOME = os.environ["CUDA_HOME"] = home
    return None


def _cuda_home(guess: str | None) -> str | None:
    """The CUDA toolkit root: torch's guess if it holds nvcc and the headers, else the toolkit of
    the ``nvcc`` found on PATH (resolving links and ``exec`` wrapper scripts), else /usr/local/cuda."""
    def ok(d):
        return d and os.path.isfile(os.path.join(d, "bin", "nvcc")) and \
            os.path.isfile(os.path.join(d, "include", "cuda_runtime.h"))

    candidates = [guess]
    nvcc = shutil.which("nvcc")
    if nvcc:
        real = os.path.realpath(nvcc)
        candidates.append(os.path.dirname(os.path.dirname(real)))
        try:
            with open(real, "rb") as f:
                head = f.read(4096)
            if head.startswith(b"#!"):
                for word in head.decode("utf-8", "replace").split():
                    if word.strip("'\"").endswith("/bin/nvcc"):
                        candidates.append(os.path.dirname(os.path.dirname(word.strip("'\""))))
        except OSError:
            pass
    candidates.append("/usr/local/cuda")
    return next((os.path.realpath(d) for d in candidates if ok(d)), None)


def main() -> None:
    try:
        import torch
        from torch.utils import cpp_extension
        from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension
    except Exception as e:  # an isolated build environment has no torch
        _no_torch_setup(f"torch was not importable at build time ({_short(e)}; pip builds in an isolated "
                        "environment unless given --no-build-isolation)")
        return

    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCH_LIST)
    linux = sys.platform.startswith("linux")
    cxx = ["-O3"] + (["-fopenmp"] if linux else [])  # at::parallel_for is inline OpenMP in torch's headers
    link = ["-fopenmp"] if linux else []  # resolves to torch's own libgomp.so.1, already loaded
    depends = [os.path.join(CSRC, "gridablate.h")]
    extensions = [CppExtension(f"{PACKAGE}._C", [os.path.join(CSRC, "gridablate_cpu.cpp")],
                               extra_compile_args={"cxx": cxx}, extra_link_args=link, depends=depends)]
    skipped = {}
    why_not_cuda = _cuda_plan(torch, cpp_extension)
    if why_not_cuda is None:
        extensions.append(CUDAExtension(
            f"{PACKAGE}._C_cuda", [os.path.join(CSRC, "cuda_module.cpp"), os.path.join(CSRC, "gridablate_cuda.cu")],
            extra_compile_args={"cxx": ["-O3"], "nvcc": ["-O3"]}, depends=depends))
    else:
        skipped["_C_cuda"] = why_not_cuda
    for ext in extensions:
        ext.optional = True  # setuptools then skips copying a module that failed to build

    class OptionalBuildExtension(BuildExtension):
        """``BuildExtension`` that records, instead of raising, the failure of a module."""

        def run(self):
            self._results = {name: {"built": False, "reason": why} for name, why in skipped.items()}
            t = time.perf_counter()
            try:
                super().run()
            finally:
                info = {"torch": torch.__version__, "torch_cuda": torch.version.cuda,
                        "cuda_arch_list": os.environ.get("TORCH_CUDA_ARCH_LIST"), "modules": self._results,
                        "seconds": round(time.perf_counter() - t, 1)}
                _write_info(os.path.dirname(self.get_ext_fullpath(f"{PACKAGE}._C")), info)
                if self.inplace or getattr(self, "editable_mode", False):
                    _write_info(os.path.join(HERE, PACKAGE), info)
                for name, r in sorted(self._results.items()):
                    state = "built" if r["built"] else f"NOT built: {r['reason']}"
                    print(f"advinterp-gridablate: {PACKAGE}.{name} {state}", file=sys.stderr)

        def build_extensions(self):
            compiler = self.compiler
            before = (getattr(compiler, "_compile", None), getattr(compiler, "compile", None))
            try:
                super().build_extensions()
            except Exception as e:
                # Raised by torch's checks before any module was compiled (compiler ABI, CUDA
                # version): record it, and retry the CPU module alone when the CUDA one was the cause.
                untouched = (getattr(compiler, "_compile", None), getattr(compiler, "compile", None)) == before
                cuda = [x for x in self.extensions if x.name.endswith("_C_cuda")]
                for x in cuda:
                    self._results["_C_cuda"] = {"built": False, "reason": _short(e)}
                if cuda and untouched:
                    self.extensions = [x for x in self.extensions if x not in cuda]
                    try:
                        super().build_extensions()
                        return
                    except Exception as e2:
                        e = e2
                for x in self.extensions:
                    self._results.setdefault(x.name.rsplit(".", 1)[1], {"built": False, "reason": _short(e)})

        def build_extension(self, ext):
            name = ext.name.rsplit(".", 1)[1]
            t = time.perf_counter()
            try:
                super().build_extension(ext)
            except Exception as e:
                self._results[name] = {"built": False, "reason": _short(e) + " (the compiler's messages are in the "
                                       "output of pip install -v)"}
                print(f"advinterp-gridablate: building {ext.name} failed; installing without it.\n"
                      f"{traceback.format_exc()}", file=sys.stderr)
                # a module left from an earlier build would not match these sources
                stale = os.path.join(HERE, *ext.name.split(".")[:-1], os.path.basename(self.get_ext_filename(ext.name)))
                if os.path.exists(stale) and (self.inplace or getattr(self, "editable_mode", False)):
                    os.remove(stale)
            else:
                self._results[name] = {"built": True, "seconds": round(time.perf_counter() - t, 1)}

    setup(ext_modules=extensions, cmdclass={"build_ext": OptionalBuildExtension})


main()
