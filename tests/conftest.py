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
