"""Unpack a data archive into the data cache (never into the repository).

    python -m visionzoo.datasets.unpack ../shared/data/cifar10-jpeg.tar.gz    # -> ~/.cache/visionzoo/data/cifar10-jpeg
    python -m visionzoo.datasets.unpack ARCHIVE --dest FOLDER

A second run finds the finished unpack and returns at once. $VISIONZOO_HOME moves the cache.
"""
from __future__ import annotations

import argparse
import sys

from visionzoo.datasets.common import ImageReadError
from visionzoo.datasets.digits import unpack_archive


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("archive", help=".tar, .tar.gz or .tgz file")
    p.add_argument("--dest", help="folder to unpack into (default: $VISIONZOO_HOME/data/<archive name>)")
    args = p.parse_args(argv)
    try:
        dest = unpack_archive(args.archive, args.dest)
    except (FileNotFoundError, ImageReadError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
