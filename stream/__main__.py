"""``python -m stream COMMAND ...``: the ``depthstream`` command (:mod:`stream.cli`)."""

import sys

from stream.cli import main

sys.exit(main())
