"""`visionzoo data`: write the synthetic data sets, unpack archives, list what is there.

    visionzoo data shapes data/shapes                     # classification, ImageFolder layout (--distort too)
    visionzoo data shapes-scenes data/shapes_scenes       # detection / instance segmentation, COCO JSON
    visionzoo data shapes-segmentation data/shapes_seg    # semantic segmentation, VOC layout
    visionzoo data shapes-sequences data/shapes_seq       # tracking, GOT-10k layout
    visionzoo data unpack ARCHIVE [--dest FOLDER]         # a .tar(.gz) into the data cache
    visionzoo data list                                   # the above, the data cache, and each packaged
                                                          # config's data.root (found or not)

Each writer takes its own options (`visionzoo data shapes --help`).
"""
from __future__ import annotations

import difflib
import importlib
import sys
from pathlib import Path

import yaml

from visionzoo.cli.configs import DATA_WRITERS_BY_ROOT, PACKAGED_CONFIGS, packaged_config_names
from visionzoo.datasets.digits import data_cache_dir
from visionzoo.strict import ConfigError

# sub-command -> (module whose main() it runs, what it writes)
WRITERS = {
    "shapes": ("visionzoo.datasets.write_shapes", "classification shapes (ImageFolder; --distort for warped ones)"),
    "shapes-scenes": ("visionzoo.datasets.write_shapes_scenes", "detection scenes (COCO JSON, instance masks)"),
    "shapes-segmentation": ("visionzoo.datasets.write_shapes_segmentation", "segmentation scenes (VOC layout)"),
    "shapes-sequences": ("visionzoo.datasets.write_shapes_sequences", "tracking sequences (GOT-10k layout)"),
    "unpack": ("visionzoo.datasets.unpack", "unpack a .tar/.tar.gz data archive into the data cache"),
}


def list_data() -> int:
    # local: visionzoo.config imports every task (and matplotlib), about 1 s that the data writers never need
    from visionzoo.config import load_yaml_with_bases

    print("writers (visionzoo data NAME OUT):")
    for name, (_, what) in WRITERS.items():
        if name != "unpack":
            print(f"  {name:<20} {what}")
    cache = data_cache_dir()
    entries = sorted(p.name for p in cache.iterdir() if not p.name.startswith(".")) if cache.is_dir() else []
    print(f"data cache {cache}: {', '.join(entries) if entries else '(empty)'}")
    print(f"packaged configs' data.root (relative to the current directory, {Path.cwd()}):")
    for name in packaged_config_names():
        try:
            data = load_yaml_with_bases(PACKAGED_CONFIGS / f"{name}.yaml").get("data") or {}
        except (ConfigError, yaml.YAMLError) as e:
            print(f"  {name:<50} unreadable: {e}")
            continue
        root = data.get("root")
        if root is None:
            print(f"  {name:<50} (built in: {data.get('dataset')})")
            continue
        writer = DATA_WRITERS_BY_ROOT.get(Path(root).name)
        found = "found" if Path(root).expanduser().exists() else (
            f"missing: visionzoo data {writer.format(root=root)}" if writer else "missing")
        print(f"  {name:<50} {root}  [{found}]")
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "list":
        return list_data()
    if command not in WRITERS:
        close = difflib.get_close_matches(command, [*WRITERS, "list"], n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        print(f"error: unknown data command {command!r}.{hint} Commands: {', '.join([*WRITERS, 'list'])}",
              file=sys.stderr)
        return 2
    previous = sys.argv
    sys.argv = [f"visionzoo data {command}", *rest]
    try:
        return int(importlib.import_module(WRITERS[command][0]).main(rest) or 0)
    finally:
        sys.argv = previous
