import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Tests never touch the network or the user's caches.
os.environ.setdefault("VISIONZOO_HOME", str(ROOT / ".pytest_cache" / "visionzoo_home"))
# Weights download on first use; tests stay offline (tests/test_downloads*.py lift this for a loopback server).
os.environ.setdefault("VISIONZOO_OFFLINE", "1")


@pytest.fixture
def isolated_caches(tmp_path, monkeypatch):
    """Empty VISIONZOO_HOME and TORCH_HOME for weight-lookup tests."""
    monkeypatch.setenv("VISIONZOO_HOME", str(tmp_path / "vz_home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    import torch.hub

    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    return tmp_path


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module: the test cores are often shared with training jobs, and two OpenMP
    threads on busy cores wait at every barrier and run several times slower than one."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def shared_archive(tmp_path_factory):
    """unpack("pennfudanped.tar.gz") -> the folder an archive of ../shared/data unpacks into, once per session
    (a tmp folder; the same command users run). Skips, naming the archive, where ../shared is absent."""
    from visionzoo.datasets.digits import unpack_archive

    folders = {}

    def unpack(name: str) -> Path:
        archive = ROOT.parent / "shared" / "data" / name
        if not archive.is_file():
            pytest.skip(f"needs {archive} (the shared data folder beside the repository)")
        if name not in folders:
            folders[name] = unpack_archive(archive, tmp_path_factory.mktemp("shared_data") / name.split(".")[0])
        return folders[name]

    return unpack
