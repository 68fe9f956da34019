"""Configs by name: `visionzoo train classification/resnet18_shapes` finds the config shipped with the package.

The package carries the repository's configs/ tree as `visionzoo/configs` (a link to ../configs in a checkout,
package data in an installed wheel), so a config name works the same after `pip install .` as in a clone.
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path

from visionzoo.strict import ConfigError  # not visionzoo.config, which imports every task

PACKAGED_CONFIGS = Path(__file__).resolve().parent.parent / "configs"
CONFIG_SUFFIXES = (".yaml", ".yml")


def packaged_config_names() -> list[str]:
    """Names of the shipped configs ("classification/resnet18_shapes"), bases (_base_.yaml) left out."""
    if not PACKAGED_CONFIGS.is_dir():
        return []
    return sorted(p.relative_to(PACKAGED_CONFIGS).with_suffix("").as_posix()
                  for p in PACKAGED_CONFIGS.rglob("*.yaml") if not p.name.startswith("_"))


def _as_name(spec: str) -> str:
    name = spec.replace(os.sep, "/")
    for prefix in ("./", "configs/"):
        if name.startswith(prefix):
            name = name[len(prefix):]
    for suffix in CONFIG_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


def find_config(spec: str | os.PathLike) -> Path:
    """A config file: `spec` as a path if it exists, else a packaged config by name (with or without the
    leading configs/ and the .yaml suffix, or a bare file stem when that is unique). A miss is a ConfigError
    naming what was tried and the closest existing configs."""
    spec = os.fspath(spec)
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    name = _as_name(spec)
    names = packaged_config_names()
    packaged = PACKAGED_CONFIGS / f"{name}.yaml"
    if name in names:
        return packaged
    by_stem = [n for n in names if n.rsplit("/", 1)[-1] == name]
    if len(by_stem) == 1:
        return PACKAGED_CONFIGS / f"{by_stem[0]}.yaml"
    candidates = list(names)
    if path.parent.is_dir():  # the user's own configs next to the one they meant
        candidates += [str(p) for p in sorted(path.parent.glob("*.y*ml")) if not p.name.startswith("_")]
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
    close += [c for c in difflib.get_close_matches(spec, candidates, n=3, cutoff=0.5) if c not in close]
    if not close and by_stem:
        close = by_stem
    hint = f" Did you mean: {', '.join(close[:3])}?" if close else ""
    raise ConfigError(
        f"config file not found: {spec} (no file {path.resolve()}, and no packaged config {name!r} in "
        f"{PACKAGED_CONFIGS}).{hint} `visionzoo models --configs` lists the packaged configs.")


def explain_missing_path(error: Exception, cfg) -> str:
    """The message of a file-not-found error, plus where a relative data.root of the config was resolved."""
    message = str(error)
    root = getattr(getattr(cfg, "data", None), "root", None) if cfg is not None else None
    if root and not Path(root).expanduser().is_absolute() and not Path(root).exists():
        message += (f" (data.root {root!r} is relative: it was resolved against the current directory "
                    f"{Path.cwd()}, giving {Path.cwd() / root}; run from the folder that holds the data, or pass "
                    f"data.root=/absolute/path")
        writer = DATA_WRITERS_BY_ROOT.get(Path(root).name)
        message += f", or write it with `visionzoo data {writer.format(root=root)}`)" if writer else ")"
    return message


# Folder names the shipped configs use for the synthetic data sets, and the `visionzoo data` command that
# writes each.
DATA_WRITERS_BY_ROOT = {"shapes": "shapes {root}", "shapes_distorted": "shapes {root} --distort",
                        "shapes_scenes": "shapes-scenes {root}", "shapes_scenes_8k": "shapes-scenes {root} --train 8000",
                        "shapes_seg": "shapes-segmentation {root}", "shapes_seq": "shapes-sequences {root}"}
