"""depthstream in a source checkout: ``python cli.py COMMAND ...``.

The command itself lives in the package (:mod:`stream.cli`); an installed wheel runs it
as ``depthstream``. This shim only makes a checkout work without installing.
"""

import sys

from stream.__main__ import run

if __name__ == "__main__":
    sys.exit(run())
