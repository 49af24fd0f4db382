"""Run the ``synbal`` command line with torchvision imported leniently first (benchmark peers only).

torchvision's compiled extension cannot load next to the CPU build of torch pinned in
``constraints.txt``; its pure-Python parts work if failures to register fake kernels for its
C++ ops are ignored. The package never does this. AIMET (the ``aimet`` arm of ``synbal reproduce
quant``) imports torchvision, so on such a machine run the reproduction through this script::

    python scripts/synbal_tolerant_torchvision.py reproduce quant --data DIR --out results/quant

It imports torchvision through the tests' helper (``tests/torchvision_compat.py``), then calls
``synbal._cli.main.main`` with the remaining arguments.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from synbal._cli.main import main
from torchvision_compat import torchvision_models

if __name__ == "__main__":
    torchvision_models()
    sys.exit(main(sys.argv[1:]))
