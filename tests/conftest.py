import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Tests never touch the network or the user's caches.
os.environ.setdefault("VISIONZOO_HOME", str(ROOT / ".pytest_cache" / "visionzoo_home"))


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
