"""The PEP 517 build backend: maturin, with the abi3 floor of the building
interpreter.

On CPython 3.10 and later the extension is built for the stable ABI of 3.10
(one wheel for every CPython >= 3.10), where PyO3 calls methods through
METH_FASTCALL; on 3.9, for the stable ABI of 3.9 (the Cargo feature
``abi3-py39``), where every call goes through an argument tuple and dict.
Everything else is maturin's own backend.
"""

import os
import sys

import maturin

if sys.version_info < (3, 10):
    _args = os.environ.get("MATURIN_PEP517_ARGS", "")
    os.environ["MATURIN_PEP517_ARGS"] = (_args + " --features abi3-py39").strip()

_HOOKS = (
    "build_wheel",
    "build_sdist",
    "build_editable",
    "get_requires_for_build_wheel",
    "get_requires_for_build_sdist",
    "get_requires_for_build_editable",
    "prepare_metadata_for_build_wheel",
    "prepare_metadata_for_build_editable",
)
globals().update({h: getattr(maturin, h) for h in _HOOKS if hasattr(maturin, h)})
