"""`pip install --no-build-isolation .`: builds the Python module with CMake (target
pipeweaver_python) for the interpreter running pip, and installs the package python/pipeweaver.
Only what Debian ships is needed (python3-pip, python3-setuptools, pybind11-dev, python3-dev):
--no-build-isolation keeps pip from fetching setuptools. docs/python.md has the other ways.
"""
import pathlib
import re
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = pathlib.Path(__file__).resolve().parent
VERSION = re.search(r"project\(pipeweaver\s+VERSION\s+([0-9.]+)", (ROOT / "CMakeLists.txt").read_text()).group(1)


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        build = pathlib.Path(self.build_temp).resolve() / "cmake"
        subprocess.check_call([
            "cmake", "-S", str(ROOT), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
            f"-DPython_EXECUTABLE={sys.executable}", "-DPIPEWEAVER_PYTHON=ON", "-DPIPEWEAVER_BUILD_TESTS=OFF",
            "-DPIPEWEAVER_BUILD_BENCH=OFF", "-DPIPEWEAVER_BUILD_EXAMPLES=OFF", "-DPIPEWEAVER_CUDA=OFF",
        ])
        subprocess.check_call(["cmake", "--build", str(build), "--target", "pipeweaver_python"])
        built = next((build / "python" / "pipeweaver").glob("_pipeweaver*"))
        target = pathlib.Path(self.get_ext_fullpath(ext.name))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(built, target)


setup(
    name="pipeweaver",
    version=VERSION,
    description="Dynamic interleaved pipeline schedules for multimodal model training",
    packages=["pipeweaver"],
    package_dir={"": "python"},
    package_data={"pipeweaver": ["*.pyi", "py.typed"]},
    ext_modules=[Extension("pipeweaver._pipeweaver", sources=[])],
    cmdclass={"build_ext": CMakeBuild},
    python_requires=">=3.8",
)
