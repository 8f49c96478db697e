"""``python -m stream COMMAND ...`` and the ``depthstream`` command: :func:`run`."""

import sys


def run() -> int:
    """Run :func:`stream.cli.main`; a Ctrl+C while it is imported exits 130 in one line.

    Python raises KeyboardInterrupt wherever Ctrl+C lands, and the command's own handling
    starts inside ``main``: this covers the moment before it.
    """
    try:
        from stream.cli import main
    except KeyboardInterrupt:
        print("depthstream: interrupted", file=sys.stderr)
        return 130
    return main()


if __name__ == "__main__":
    sys.exit(run())
