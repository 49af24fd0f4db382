"""``python -m synbal``: the command line, the same as the ``synbal`` script (:mod:`synbal._cli.main`)."""

from __future__ import annotations

import sys

from synbal._cli.main import main

if __name__ == "__main__":
    sys.exit(main())
