"""Weights downloaded on first use, against a real HTTP server on 127.0.0.1: good files, wrong digests, a
connection cut mid-file, offline mode, torchvision tags, hf-hub repositories, and the cache installers."""
import base64
import hashlib
import json
import os
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import torch
import torchvision
from safetensors.torch import save

import visionzoo
import visionzoo.weights as vw
from visionzoo import hub
from visionzoo.weights import WeightsError, sha256_file

pytestmark = pytest.mark.usefixtures("one_thread")

SERVER_LIFETIME_S = 300  # a safety net: the server shuts itself down after this, whatever the test does


class WeightServer:
    """A loopback HTTP server for one test: `add(path, data)` publishes bytes; `cut=True` announces the
    full length but closes the connection halfway through the body. `requests` logs (method, path)."""

    def __init__(self):
        self.routes: dict[str, tuple[bytes, bool, dict]] = {}
        self.requests: list[tuple[str, str]] = []
        self.on_post = None  # (path, body bytes) -> JSON-able answer; set by the fake hub
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 10  # a stalled client cannot hold a handler thread

            def end_headers(self):
                # No keep-alive: a client's pooled connection must not outlive this server and reach a
                # later test's server that got the same port.
                self.send_header("Connection", "close")
                self.close_connection = True
                super().end_headers()

            def do_GET(self):
                self._serve(send_body=True)

            def do_HEAD(self):
                self._serve(send_body=False)

            def do_POST(self):
                path = urlsplit(self.path).path
                owner.requests.append(("POST", path))
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                answer = json.dumps(owner.on_post(path, body) if owner.on_post else {}).encode()
                self.send_response(200 if owner.on_post else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def _serve(self, send_body):
                path = urlsplit(self.path).path
                owner.requests.append((self.command, path))
                if path not in owner.routes:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")  # how the hub says "no such file"
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data, cut, headers = owner.routes[path]
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                if not send_body:
                    return
                if cut:
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                else:
                    self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.stopper = threading.Timer(SERVER_LIFETIME_S, self.httpd.shutdown)

    def add(self, path: str, data: bytes, *, cut: bool = False, headers: dict | None = None) -> str:
        self.routes[path] = (data, cut, headers or {})
        return self.base + path

    def __enter__(self):
        self.thread.start()
        self.stopper.start()
        return self

    def __exit__(self, *exc):
        self.stopper.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server(isolated_caches, monkeypatch):
    """Downloads allowed (conftest keeps every other test offline), proxies bypassed, a fresh server."""
    monkeypatch.delenv("VISIONZOO_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with WeightServer() as srv:
        yield srv


def _weights_bytes(name="ae_mlp", seed=0, **kwargs) -> tuple[bytes, dict]:
    torch.manual_seed(seed)
    state = {k: v.contiguous() for k, v in visionzoo.create_model(name, **kwargs).state_dict().items()}
    return save(state), state


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _cache_files() -> list[str]:
    folder = vw.user_cache_dir()
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


# ----------------------------------------------------------------------------------------------- URLs
def test_url_downloads_once_verified_with_its_card_and_is_found_by_tag(server):
    data, state = _weights_bytes()
    card = {"model": "ae_mlp", "tag": "demo", "sha256": _sha(data), "metrics": {"mse": 0.01}}
    url = server.add("/files/ae_mlp.demo.safetensors", data)
    server.add("/files/ae_mlp.demo.json", json.dumps(card).encode())

    model = visionzoo.create_model("ae_mlp", weights=f"{url}#sha256={_sha(data)}")
    cached = vw.user_cache_dir() / "ae_mlp.demo.safetensors"
    assert sha256_file(cached) == _sha(data)
    assert json.loads(cached.with_suffix(".json").read_text()) == card
    assert _cache_files() == ["ae_mlp.demo.json", "ae_mlp.demo.safetensors"]  # no temporary file left
    assert model.pretrained_cfg["source"] == "url" and model.pretrained_cfg["metrics"] == {"mse": 0.01}
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key

    served = len(server.requests)
    visionzoo.create_model("ae_mlp", weights=url)  # cached: no second download
    again = visionzoo.create_model("ae_mlp", weights="demo")  # and found by tag like any cached file
    assert len(server.requests) == served
    assert again.pretrained_cfg["source"] == "cache"


def test_url_without_card_or_pin_downloads_and_reads(server):
    data, state = _weights_bytes(seed=1)
    url = server.add("/ae_mlp-plain.safetensors", data)
    resolved = hub.fetch_url(url, progress=False)
    assert resolved.path == vw.user_cache_dir() / "ae_mlp-plain.safetensors"
    assert resolved.card == {} and resolved.expected_sha256 is None
    assert ("GET", "/ae_mlp-plain.json") in server.requests  # the card was looked for, and is optional
    assert sha256_file(resolved.path) == _sha(data)


def test_wrong_pin_is_refused_and_nothing_is_left(server):
    data, _ = _weights_bytes()
    url = server.add("/ae_mlp.bad.safetensors", data)
    with pytest.raises(WeightsError, match=r"sha256 mismatch: expected 0{64}\.\.\., the downloaded file has " + _sha(data)):
        visionzoo.create_model("ae_mlp", weights=f"{url}#sha256={'0' * 64}")
    assert _cache_files() == []


def test_card_sha256_is_checked_when_there_is_no_pin(server):
    data, _ = _weights_bytes()
    url = server.add("/ae_mlp.carded.safetensors", data)
    server.add("/ae_mlp.carded.json", json.dumps({"model": "ae_mlp", "sha256": "ab" * 32}).encode())
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        visionzoo.create_model("ae_mlp", weights=url)
    assert _cache_files() == []


def test_card_for_another_model_is_refused_before_downloading(server):
    data, _ = _weights_bytes()
    url = server.add("/vae.safetensors", data)
    server.add("/vae.json", json.dumps({"model": "vae_mlp"}).encode())
    with pytest.raises(WeightsError, match="is a 'vae_mlp' weight file"):
        visionzoo.create_model("ae_mlp", weights=url)
    assert ("GET", "/vae.safetensors") not in server.requests
    assert _cache_files() == []


@pytest.mark.parametrize("pinned", [False, True])
def test_connection_cut_mid_file_leaves_nothing(server, pinned):
    data, _ = _weights_bytes()
    url = server.add("/ae_mlp.cut.safetensors", data, cut=True)
    spec = f"{url}#sha256={_sha(data)}" if pinned else url
    message = "sha256 mismatch" if pinned else "not a complete weight file"
    with pytest.raises(WeightsError, match=message):
        visionzoo.create_model("ae_mlp", weights=spec)
    assert _cache_files() == []


def test_http_error_names_the_status(server):
    with pytest.raises(WeightsError, match=r"HTTP 404.*nothing was saved"):
        hub.fetch_url(server.base + "/missing.safetensors", progress=False)
    assert _cache_files() == []


def test_unreachable_server_names_the_weights_url(isolated_caches, monkeypatch):
    monkeypatch.delenv("VISIONZOO_OFFLINE", raising=False)
    with socket.socket() as s:  # a port that nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/ae_mlp.x.safetensors"
    with pytest.raises(WeightsError, match=f"{url}: download failed \\(could not connect"):
        visionzoo.create_model("ae_mlp", weights=url)
    assert _cache_files() == []


@pytest.mark.parametrize("variable", ["VISIONZOO_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_mode_never_connects(server, monkeypatch, variable):
    data, _ = _weights_bytes()
    url = server.add("/ae_mlp.off.safetensors", data)
    monkeypatch.setenv(variable, "1")
    with pytest.raises(WeightsError) as err:
        visionzoo.create_model("ae_mlp", weights=url)
    msg = str(err.value)
    assert f"offline ({variable}=1)" in msg and "ae_mlp.off.safetensors" in msg
    assert str(vw.user_cache_dir()) in msg
    assert server.requests == []


@pytest.mark.parametrize(
    "spec, message",
    [
        ("http://example.com/w.safetensors", "plain http:// can be altered"),
        ("https://example.com/download?id=3", "cannot name the cached file"),
        ("https://example.com/../w.html", "cannot name the cached file"),
        ("https://example.com/w.safetensors#md5=abc", "must be 'sha256="),
        ("https://example.com/w.safetensors#sha256=abc", "must be 'sha256="),
    ],
)
def test_bad_urls_are_refused_before_any_connection(isolated_caches, monkeypatch, spec, message):
    monkeypatch.delenv("VISIONZOO_OFFLINE", raising=False)
    with pytest.raises(WeightsError, match=message):
        visionzoo.create_model("ae_mlp", weights=spec)


def test_plain_http_with_a_full_pin_is_accepted():
    url, name, pin = hub.parse_weights_url("http://mirror.example/w/a.pth#sha256=" + "A" * 64)
    assert (url, name, pin) == ("http://mirror.example/w/a.pth", "a.pth", "a" * 64)


# ---------------------------------------------------------------------------------------- torchvision
def _official_record(monkeypatch, url):
    """torchvision's record for resnet18 IMAGENET1K_V1, with its URL pointing at the loopback server."""
    real = vw._torchvision_weight_enum("resnet18", "resnet18", "IMAGENET1K_V1")

    class Record:
        name = real.name
        meta = real.meta
        transforms = real.transforms

    Record.url = url
    monkeypatch.setattr(vw, "_torchvision_weight_enum", lambda *a: Record)


def test_torchvision_tag_downloads_into_torch_hub_checkpoints(server, monkeypatch, tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None).eval()
    torch.save(reference.state_dict(), tmp_path / "r18.pth")
    data = (tmp_path / "r18.pth").read_bytes()
    filename = f"resnet18-{_sha(data)[:8]}.pth"  # torchvision's naming: the sha256 prefix in the name
    _official_record(monkeypatch, server.add(f"/models/{filename}", data))

    model = visionzoo.create_model("resnet18", weights="torchvision:IMAGENET1K_V1").eval()
    path = vw.torch_hub_checkpoints_dir() / filename
    assert model.pretrained_cfg["file"] == str(path) and sha256_file(path) == _sha(data)
    assert sorted(p.name for p in path.parent.iterdir()) == [filename]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))


def test_torchvision_file_not_matching_its_name_is_refused(server, monkeypatch):
    data = b"not the official file"
    _official_record(monkeypatch, server.add("/models/resnet18-f37072fd.pth", data))
    with pytest.raises(WeightsError) as err:
        visionzoo.create_model("resnet18", weights="torchvision:IMAGENET1K_V1")
    assert "resnet18-f37072fd.pth" in str(err.value) and "sha256 mismatch" in str(err.value)
    folder = vw.torch_hub_checkpoints_dir()
    assert not folder.is_dir() or list(folder.iterdir()) == []


def test_torchvision_offline_keeps_the_missing_file_message(isolated_caches, monkeypatch):
    monkeypatch.setenv("VISIONZOO_OFFLINE", "1")
    with pytest.raises(WeightsError) as err:
        visionzoo.create_model("resnet50", weights="torchvision:IMAGENET1K_V2")
    msg = str(err.value)
    assert "missing file: resnet50-11ad3fa6.pth" in msg
    assert f"searched: {vw.torch_hub_checkpoints_dir() / 'resnet50-11ad3fa6.pth'}" in msg
    assert "download it from https://download.pytorch.org/models/resnet50-11ad3fa6.pth" in msg
    assert "offline (VISIONZOO_OFFLINE=1)" in msg


# ------------------------------------------------------------------------------- paths with a card
def test_path_is_checked_against_the_card_beside_it(tmp_path):
    data, _ = _weights_bytes()
    path = tmp_path / "mine.safetensors"
    path.write_bytes(data)
    path.with_suffix(".json").write_text(json.dumps({"model": "ae_mlp", "sha256": _sha(data)}))
    assert visionzoo.create_model("ae_mlp", weights=str(path)).pretrained_cfg["source"] == "path"
    path.with_suffix(".json").write_text(json.dumps({"model": "ae_mlp", "sha256": "12" * 32}))
    with pytest.raises(WeightsError, match=f"{path}: sha256 mismatch"):
        visionzoo.create_model("ae_mlp", weights=str(path))


# --------------------------------------------------------------------- `visionzoo weights` support
def _fake_checkout(root: Path) -> Path:
    folder = root / "checkout" / "weights"
    folder.mkdir(parents=True)
    for tag, seed in (("one", 0), ("two", 1)):
        data, _ = _weights_bytes(seed=seed)
        (folder / f"ae_mlp.{tag}.safetensors").write_bytes(data)
        (folder / f"ae_mlp.{tag}.json").write_text(json.dumps({"model": "ae_mlp", "tag": tag, "sha256": _sha(data)}))
    return folder.parent


def test_install_from_checkout_copies_weights_and_cards(isolated_caches):
    checkout = _fake_checkout(isolated_caches)
    written = hub.install_from_checkout("ae_mlp", "two", source=checkout)
    assert [p.name for p in written] == ["ae_mlp.two.json", "ae_mlp.two.safetensors"]
    assert _cache_files() == ["ae_mlp.two.json", "ae_mlp.two.safetensors"]
    src = checkout / "weights" / "ae_mlp.two.safetensors"
    assert sha256_file(vw.user_cache_dir() / src.name) == sha256_file(src)
    assert visionzoo.create_model("ae_mlp", weights="two").pretrained_cfg["source"] == "cache"
    assert len(hub.install_from_checkout(source=checkout / "weights")) == 4  # everything, by folder
    with pytest.raises(WeightsError, match=r"no weight files matching ae_mlp\.three\.\*.*Available: ae_mlp\.one, ae_mlp\.two"):
        hub.install_from_checkout("ae_mlp", "three", source=checkout)


def test_install_from_checkout_refuses_a_file_its_card_does_not_describe(isolated_caches):
    checkout = _fake_checkout(isolated_caches)
    pointer = b"version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n"
    (checkout / "weights" / "ae_mlp.one.safetensors").write_bytes(pointer)
    with pytest.raises(WeightsError, match="Git LFS pointer"):
        hub.install_from_checkout("ae_mlp", "one", source=checkout)
    assert _cache_files() == []


def test_fetch_url_for_the_cli_reuses_or_forces(server):
    data, _ = _weights_bytes()
    url = server.add("/ae_mlp.cli.safetensors", data)
    first = hub.fetch_url(url, progress=False)
    gets = server.requests.count(("GET", "/ae_mlp.cli.safetensors"))
    assert hub.fetch_url(url, progress=False).path == first.path
    assert server.requests.count(("GET", "/ae_mlp.cli.safetensors")) == gets
    hub.fetch_url(url, progress=False, force=True)
    assert server.requests.count(("GET", "/ae_mlp.cli.safetensors")) == gets + 1
    assert _cache_files() == ["ae_mlp.cli.safetensors"]
    # a damaged cached copy fails its pin; force fetches a good one in its place
    first.path.write_bytes(data[:-1] + b"\x00")
    pinned = f"{url}#sha256={_sha(data)}"
    with pytest.raises(WeightsError, match=f"{first.path}: sha256 mismatch"):
        hub.fetch_url(pinned, progress=False)
    assert sha256_file(hub.fetch_url(pinned, progress=False, force=True).path) == _sha(data)


# ------------------------------------------------------------------------------------------- hf-hub
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def fake_hub(server, monkeypatch, isolated_caches):
    """The loopback server answering as a Hub endpoint (HF_ENDPOINT), with an empty HF cache."""
    pytest.importorskip("huggingface_hub", reason="huggingface_hub (the 'hub' extra) is not installed")
    monkeypatch.setenv("HF_ENDPOINT", server.base)
    monkeypatch.setenv("HF_HUB_CACHE", str(isolated_caches / "hf_cache"))

    def publish(repo, filename, data, *, revision="main", etag=None):
        headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{etag or _sha(data)}"'}
        return server.add(f"/{repo}/resolve/{revision}/{filename}", data, headers=headers)

    def hub_api(path, body):
        """The few write endpoints huggingface_hub's upload calls: every file is committed inline."""
        if path == "/api/repos/create":
            request = json.loads(body)
            return {"url": f"{server.base}/{request['organization']}/{request['name']}"}
        if path == "/api/validate-yaml":
            return {}
        prefix, kind, revision = path.rsplit("/", 2)  # /api/models/ORG/NAME/{preupload,commit}/REV
        repo = prefix[len("/api/models/"):]
        if kind == "preupload":
            files = json.loads(body)["files"]
            return {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
        assert kind == "commit", path
        for line in body.splitlines():
            item = json.loads(line)
            assert item["key"] in ("header", "file"), f"the fake hub only takes inline files, got {item}"
            if item["key"] == "file":
                publish(repo, item["value"]["path"], base64.b64decode(item["value"]["content"]), revision=revision)
        return {"commitUrl": f"{server.base}/{repo}/commit/{COMMIT}", "commitOid": COMMIT, "pullRequestUrl": None}

    server.publish = publish
    server.on_post = hub_api
    return server


def test_hf_hub_repository_downloads_and_loads(fake_hub, monkeypatch):
    data, state = _weights_bytes(seed=3)
    card = {"model": "ae_mlp", "tag": "hub", "sha256": _sha(data), "metrics": {"mse": 0.02}}
    fake_hub.publish("org/ae-demo", "model.safetensors", data, revision="v1")
    fake_hub.publish("org/ae-demo", "config.json", json.dumps(card).encode(), revision="v1", etag="c" * 40)

    model = visionzoo.create_model("ae_mlp", weights="hf-hub:org/ae-demo@v1")
    assert model.pretrained_cfg["source"] == "hf-hub" and model.pretrained_cfg["metrics"] == {"mse": 0.02}
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert ("HEAD", "/org/ae-demo/resolve/v1/model.safetensors") in fake_hub.requests

    # offline, the cached copy is used and the server is not asked
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    asked = len(fake_hub.requests)
    visionzoo.create_model("ae_mlp", weights="hf-hub:org/ae-demo@v1")
    assert len(fake_hub.requests) == asked


def test_hf_hub_file_not_matching_its_lfs_sha256_is_removed(fake_hub):
    data, _ = _weights_bytes()
    fake_hub.publish("org/bad", "model.safetensors", data, etag="e" * 64)
    with pytest.raises(WeightsError, match="sha256 mismatch for model.safetensors: the hub's LFS record says e{64}"):
        visionzoo.create_model("ae_mlp", weights="hf-hub:org/bad")
    left = [p for p in Path(os.environ["HF_HUB_CACHE"]).rglob("*") if p.is_file() and p.stat().st_size == len(data)]
    assert left == []  # neither the blob nor a link to it


def test_hf_hub_missing_weights_file_and_offline_messages(fake_hub, monkeypatch):
    fake_hub.publish("org/empty", "config.json", b"{}", etag="d" * 40)
    with pytest.raises(WeightsError, match="has no model.safetensors"):
        visionzoo.create_model("ae_mlp", weights="hf-hub:org/empty")
    monkeypatch.setenv("VISIONZOO_OFFLINE", "1")
    asked = len(fake_hub.requests)
    with pytest.raises(WeightsError, match=r"(?s)not in the Hugging Face cache.*offline \(VISIONZOO_OFFLINE=1\)"):
        visionzoo.create_model("ae_mlp", weights="hf-hub:org/never-seen")
    assert len(fake_hub.requests) == asked


def test_push_to_hub_then_load_it_back(fake_hub, tmp_path):
    import huggingface_hub

    if int(huggingface_hub.__version__.split(".")[0]) < 1:
        pytest.skip("huggingface_hub < 1.0 checks create_repo's answer against HF_ENDPOINT as read at import")
    data, state = _weights_bytes(seed=4)
    path = tmp_path / "ae_mlp.pushed.safetensors"
    path.write_bytes(data)
    card = {"model": "ae_mlp", "tag": "pushed", "task": "generative", "sha256": _sha(data), "metrics": {"mse": 0.5}}
    path.with_suffix(".json").write_text(json.dumps(card))

    url = hub.push_to_hub(path, "org/pushed")
    assert url == f"{fake_hub.base}/org/pushed/commit/{COMMIT}"
    readme = fake_hub.routes["/org/pushed/resolve/main/README.md"][0].decode()
    assert 'weights="hf-hub:org/pushed"' in readme and "| mse | 0.5 |" in readme
    assert json.loads(fake_hub.routes["/org/pushed/resolve/main/config.json"][0]) == card
    assert fake_hub.routes["/org/pushed/resolve/main/model.safetensors"][0] == data, fake_hub.requests
    model = visionzoo.create_model("ae_mlp", weights="hf-hub:org/pushed")
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key

    path.write_bytes(data[:-1] + b"\x00")  # a file its card does not describe is not uploaded
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        hub.push_to_hub(path, "org/pushed")


def test_hf_hub_without_huggingface_hub_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # makes `import huggingface_hub` fail
    with pytest.raises(WeightsError, match=r"pip install 'visionzoo\[hub\]'"):
        visionzoo.create_model("ae_mlp", weights="hf-hub:org/name")


@pytest.mark.parametrize("spec", ["hf-hub:noslash", "hf-hub:org/name@", "hf-hub:../x/y"])
def test_bad_hf_hub_names(spec):
    with pytest.raises(WeightsError, match="expected 'hf-hub:ORG/NAME'"):
        visionzoo.create_model("ae_mlp", weights=spec)
