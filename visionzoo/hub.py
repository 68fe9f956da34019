"""Weights that download on first use, verified, into the caches `visionzoo.weights` searches.

Sources (the `weights=` argument of `create_model`):
  torchvision:<TAG>                  torchvision's official file -> $TORCH_HOME/hub/checkpoints/<file>,
                                     checked against the sha256 prefix in its name (as torchvision does)
  https://host/.../<file>[#sha256=HEX]  -> $VISIONZOO_HOME/weights/<file>, with its model card <stem>.json
                                     when the server has one; the pin (or the card's sha256) is checked
  hf-hub:ORG/NAME[@REV]              the repository's model.safetensors and config.json (its model card),
                                     through huggingface_hub (optional extra `visionzoo[hub]`) into its cache

Files are fetched by torch.hub.download_url_to_file (urllib and a tqdm progress bar) or huggingface_hub,
never by an HTTP client of our own. A download lands in a temporary file that is renamed into place only
once its sha256 matched (or, when no digest is known, once it read completely as weights), so a cut or
wrong download never leaves a usable-looking file behind.

VISIONZOO_OFFLINE=1 (or HF_HUB_OFFLINE=1) forbids any network access: only files already on disk are used.
"""
from __future__ import annotations

import http.client
import ipaddress
import json
import os
import re
import shutil
import urllib.error
import urllib.parse
import uuid
from pathlib import Path, PurePosixPath

import torch.hub

from visionzoo.weight_files import (
    REPO_WEIGHTS_DIR,
    WEIGHT_SUFFIXES,
    ResolvedWeights,
    WeightsError,
    read_card,
    read_state_dict,
    sha256_file,
    user_cache_dir,
    verify_sha256,
)

OFFLINE_VARS = ("VISIONZOO_OFFLINE", "HF_HUB_OFFLINE")
URL_SCHEMES = ("https://", "http://")
HF_HUB_PREFIX = "hf-hub:"
HF_WEIGHTS_FILE = "model.safetensors"
HF_CARD_FILE = "config.json"
_SAFE_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_HF_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
_SHA256_PIN = re.compile(r"sha256=([0-9a-fA-F]{8,64})")
_LFS_POINTER = b"version https://git-lfs"


def offline_reason() -> str | None:
    """'VAR=value' for the variable that forbids network access, or None when downloads are allowed."""
    for var in OFFLINE_VARS:
        value = os.environ.get(var, "").strip()
        if value.upper() in ("1", "ON", "YES", "TRUE"):
            return f"{var}={value}"
    return None


def is_url(spec: str) -> bool:
    return spec.startswith(URL_SCHEMES)


# ----------------------------------------------------------------------------------------------- URLs
def parse_weights_url(spec: str) -> tuple[str, str, str | None]:
    """Split `https://host/path/<file>[#sha256=HEX]` into (url without the pin, cache file name, pin).

    The pin is the full hex digest or a prefix of at least 8 hex digits. Plain http:// is accepted for a
    loopback server, or anywhere with a full 64-digit pin (the digest then guards the content)."""
    parts = urllib.parse.urlsplit(spec)
    pin = None
    if parts.fragment:
        match = _SHA256_PIN.fullmatch(parts.fragment)
        if not match:
            raise WeightsError(
                f"weights URL {spec!r}: the part after '#' must be 'sha256=<hex digest, or a prefix of at "
                f"least 8 hex digits>', got '#{parts.fragment}'"
            )
        pin = match.group(1).lower()
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise WeightsError(f"weights URL {spec!r}: expected https://HOST/PATH/FILE")
    if parts.scheme == "http" and not (_is_loopback(parts.hostname) or (pin and len(pin) == 64)):
        raise WeightsError(
            f"weights URL {spec!r}: plain http:// can be altered on the way; use https://, or pin the file "
            f"with '#sha256=<its full 64-digit sha256>'"
        )
    filename = PurePosixPath(urllib.parse.unquote(parts.path)).name
    if not (_SAFE_FILE_NAME.fullmatch(filename) and filename.endswith(WEIGHT_SUFFIXES)):
        raise WeightsError(
            f"weights URL {spec!r}: its last path segment {filename!r} cannot name the cached file; expected "
            f"a plain file name ending in {', '.join(WEIGHT_SUFFIXES)} (e.g. resnet18.mytag.safetensors)"
        )
    return urllib.parse.urlunsplit(parts._replace(fragment="")), filename, pin


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _no_network(what: str, reason: str) -> WeightsError:
    return WeightsError(f"{what}\n  offline ({reason}): nothing is downloaded. Unset it to download the file.")


def _download_failure(error: BaseException) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"the server answered HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return f"could not connect: {error.reason}"
    return f"{type(error).__name__}: {error}"


def download_file(url: str, dest: Path, sha256: str | None = None, *, progress: bool = True) -> Path:
    """Download `url` to `dest` with torch.hub.download_url_to_file (progress bar on stderr).

    The bytes go to a temporary file beside `dest`, which becomes `dest` only after its sha256 matched
    `sha256` (a full digest or a prefix) or, when no digest is known, after it read completely as a
    weight file; a cut connection, a wrong file or a wrong digest leaves nothing behind."""
    if reason := offline_reason():
        raise _no_network(f"cannot download {url} to {dest}.", reason)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.stem}.{uuid.uuid4().hex[:12]}.incomplete{dest.suffix}")
    try:
        try:
            torch.hub.download_url_to_file(url, str(tmp), hash_prefix=sha256, progress=progress)
        except RuntimeError as e:
            if "invalid hash value" not in str(e):
                raise
            got = re.search(r'got "([0-9a-f]+)"', str(e))
            raise WeightsError(
                f"{url}: sha256 mismatch: expected {sha256}..., the downloaded file has "
                f"{got.group(1) if got else 'another digest'}. Refused; nothing was saved in {dest.parent}."
            ) from None
        except (OSError, http.client.HTTPException) as e:  # urllib's errors are OSErrors
            raise WeightsError(f"{url}: download failed ({_download_failure(e)}); nothing was saved.") from e
        if sha256 is None:
            try:  # a download cut short, or an error page, does not read as weights
                read_state_dict(tmp)
            except WeightsError as e:
                raise WeightsError(
                    f"{url}: the download is not a complete weight file (the connection may have been cut); "
                    f"refused, nothing was saved in {dest.parent}. Details: {e}"
                ) from None
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _download_card(card_url: str, dest: Path, weights_url: str) -> dict | None:
    """The model card published beside a weight file, saved as `dest`; None when the server has none."""
    tmp = dest.with_name(f".{dest.stem}.{uuid.uuid4().hex[:12]}.incomplete.json")
    try:
        try:
            torch.hub.download_url_to_file(card_url, str(tmp), progress=False)
        except urllib.error.HTTPError as e:
            if e.code in (403, 404, 410):  # no card published (object stores answer 403 for a missing key)
                return None
            raise WeightsError(f"{weights_url}: download failed ({_download_failure(e)} for its model card "
                               f"{card_url}); nothing was saved.") from e
        except (OSError, http.client.HTTPException) as e:
            raise WeightsError(f"{weights_url}: download failed ({_download_failure(e)}); nothing was saved.") from e
        try:
            card = json.loads(tmp.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None  # not a model card (e.g. an HTML page served for any name)
        if not isinstance(card, dict):
            return None
        os.replace(tmp, dest)
        return card
    finally:
        tmp.unlink(missing_ok=True)


def fetch_url(
    url: str,
    *,
    model_name: str | None = None,
    dest_dir: str | os.PathLike | None = None,
    force: bool = False,
    progress: bool = True,
) -> ResolvedWeights:
    """The weight file at `url` (optionally pinned with '#sha256=HEX'), downloaded once into the user cache
    ($VISIONZOO_HOME/weights, or `dest_dir`) under its own file name, with the model card <stem>.json that
    the server publishes beside it, if any. A cached file is reused (and checked) unless `force`.

    The expected sha256 is the pin, else the card's; a mismatch is an error and leaves no file.
    `model_name`, when given, must agree with the card's model."""
    clean_url, filename, pin = parse_weights_url(url)
    folder = Path(dest_dir) if dest_dir is not None else user_cache_dir()
    path = folder / filename
    card_file = path.with_suffix(".json")
    if path.is_file() and not force:
        card = read_card(path)
        _check_card_model(card, model_name, path)
        cached = ResolvedWeights(path, "url", url, card, pin or card.get("sha256"))
        verify_sha256(cached)
        cached.verified = True
        return cached
    if reason := offline_reason():
        raise _no_network(
            f"weights {url!r} are not in the cache.\n  missing file: {filename}\n  searched: {path}", reason
        )
    folder.mkdir(parents=True, exist_ok=True)
    card_url = clean_url[: -len(PurePosixPath(filename).suffix)] + ".json"
    staged_card = card_file.with_name(f".{card_file.stem}.{uuid.uuid4().hex[:12]}.card.json")
    try:
        card = _download_card(card_url, staged_card, clean_url) or {}
        _check_card_model(card, model_name, card_url)
        card_sha = (card.get("sha256") or "").lower() or None
        if pin and card_sha and not card_sha.startswith(pin) and not pin.startswith(card_sha):
            raise WeightsError(
                f"{url}: the pin sha256={pin} disagrees with the sha256 {card_sha} in the model card {card_url}"
            )
        expected = max(pin or "", card_sha or "", key=len) or None
        download_file(clean_url, path, expected, progress=progress)
        if card:
            os.replace(staged_card, card_file)
        else:
            card_file.unlink(missing_ok=True)  # a card left from an earlier file of this name no longer applies
    finally:
        staged_card.unlink(missing_ok=True)
    return ResolvedWeights(path, "url", url, card, expected, verified=expected is not None)


def _check_card_model(card: dict, model_name: str | None, where) -> None:
    if model_name and card.get("model") not in (None, model_name):
        raise WeightsError(f"{where} is a {card.get('model')!r} weight file (per its model card), not {model_name!r}")


# ---------------------------------------------------------------------------------------- torchvision
def fetch_torchvision(path: Path, url: str, sha256_prefix: str | None, what: str, *, progress: bool = True) -> None:
    """Download torchvision's official file into torch.hub's checkpoint folder (where torchvision itself
    keeps it), checked against the sha256 prefix in its name."""
    missing = (
        f"official torchvision weights {what} not found.\n  missing file: {path.name}\n  searched: {path}\n"
        f"  download it from {url} and put it in {path.parent} (or set TORCH_HOME)."
    )
    if reason := offline_reason():
        raise _no_network(missing, reason)
    try:
        download_file(url, path, sha256_prefix, progress=progress)
    except WeightsError as e:
        raise WeightsError(f"{missing}\n  automatic download failed: {e}") from None


# ------------------------------------------------------------------------------------------- hf-hub
def parse_hf_hub(spec: str) -> tuple[str, str | None]:
    """'hf-hub:ORG/NAME[@REV]' -> (repo id, revision or None)."""
    body = spec[len(HF_HUB_PREFIX):]
    repo_id, _, revision = body.partition("@")
    if not _HF_REPO_ID.fullmatch(repo_id) or (revision == "" and "@" in body):
        raise WeightsError(f"weights {spec!r}: expected 'hf-hub:ORG/NAME' or 'hf-hub:ORG/NAME@REVISION'")
    return repo_id, revision or None


def resolve_hf_hub(model_name: str, spec: str) -> ResolvedWeights:
    """model.safetensors and its card config.json from a Hugging Face Hub repository, through huggingface_hub
    (its cache: HF_HOME / HF_HUB_CACHE; its server: HF_ENDPOINT), checked against the card's sha256 and the
    LFS sha256 the hub names the file by, before use."""
    repo_id, revision = parse_hf_hub(spec)
    try:  # local: huggingface_hub is the optional 'hub' extra, needed only for hf-hub: weights
        import huggingface_hub
        from huggingface_hub import constants as hf_constants
        from huggingface_hub import errors as hf_errors
    except ImportError:
        raise WeightsError(
            f"weights {spec!r} need the huggingface_hub package, which is not installed. "
            f"Install it with: pip install 'visionzoo[hub]'  (or: pip install huggingface_hub)"
        ) from None
    reason = offline_reason()
    # Read at call time (huggingface_hub reads them once, at import), so setting them later still works.
    common = {
        "repo_id": repo_id,
        "revision": revision,
        "cache_dir": os.environ.get("HF_HUB_CACHE") or None,
        "endpoint": os.environ.get("HF_ENDPOINT") or None,
        "local_files_only": reason is not None,
        "library_name": "visionzoo",
    }
    where = f"{repo_id}" + (f"@{revision}" if revision else "")

    # huggingface_hub >= 1.0 names the hub's "no such file" RemoteEntryNotFoundError; before, it was
    # EntryNotFoundError, of which LocalEntryNotFoundError (not in the cache) is a subclass: catch that first.
    remote_missing = getattr(hf_errors, "RemoteEntryNotFoundError", hf_errors.EntryNotFoundError)

    def download(filename: str, required: bool) -> Path | None:
        try:
            return Path(huggingface_hub.hf_hub_download(filename=filename, **common))
        except hf_errors.LocalEntryNotFoundError as e:
            if not required:
                return None
            if reason is None:  # online, yet neither the hub nor the cache had it: the connection failed
                raise WeightsError(f"weights {spec!r}: could not download {filename} from {where} ({e})") from None
            raise _no_network(
                f"weights {spec!r}: {filename} of {where} is not in the Hugging Face cache "
                f"({common['cache_dir'] or hf_constants.HF_HUB_CACHE}).", reason
            ) from None
        except remote_missing:
            if not required:
                return None
            raise WeightsError(
                f"weights {spec!r}: the repository {where} has no {filename} (a visionzoo hub repository "
                f"holds {HF_WEIGHTS_FILE} and its model card {HF_CARD_FILE})"
            ) from None
        except hf_errors.RepositoryNotFoundError:
            raise WeightsError(f"weights {spec!r}: no repository {repo_id} (or it is private and no token is set)") from None
        except hf_errors.RevisionNotFoundError:
            raise WeightsError(f"weights {spec!r}: repository {repo_id} has no revision {revision!r}") from None
        except (hf_errors.HfHubHTTPError, OSError) as e:
            raise WeightsError(f"weights {spec!r}: downloading {filename} from {where} failed: {e}") from None

    card_path = download(HF_CARD_FILE, required=False)
    card = {}
    if card_path is not None:
        try:
            card = json.loads(card_path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise WeightsError(f"weights {spec!r}: {HF_CARD_FILE} of {where} is not valid JSON: {e}") from None
        if not isinstance(card, dict):
            raise WeightsError(f"weights {spec!r}: {HF_CARD_FILE} of {where} is not a JSON object")
    _check_card_model(card, model_name, f"{spec} ({HF_CARD_FILE})")
    path = download(HF_WEIGHTS_FILE, required=True)
    _verify_hf_file(path, card.get("sha256"), spec)
    return ResolvedWeights(path, "hf-hub", spec, card, card.get("sha256"), verified=True)


def _verify_hf_file(path: Path, card_sha256: str | None, spec: str) -> None:
    """huggingface_hub checks a download's size only; check its sha256 against the card and against the blob
    name (the hub names LFS files by their sha256). A mismatching file is removed from the cache."""
    blob = path.resolve()
    expected = [(card_sha256.lower(), "its model card")] if card_sha256 else []
    if re.fullmatch(r"[0-9a-f]{64}", blob.name):
        expected.append((blob.name, "the hub's LFS record"))
    if not expected:
        return
    actual = sha256_file(blob)
    for digest, source in expected:
        if not actual.startswith(digest):
            for stale in {path, blob}:
                stale.unlink(missing_ok=True)
            raise WeightsError(
                f"weights {spec!r}: sha256 mismatch for {HF_WEIGHTS_FILE}: {source} says {digest}, the downloaded "
                f"file has {actual}. Refused and removed from the cache."
            )


# ---------------------------------------------------------------- `visionzoo weights` support
def install_from_checkout(
    model: str | None = None,
    tag: str | None = None,
    *,
    source: str | os.PathLike | None = None,
    dest_dir: str | os.PathLike | None = None,
) -> list[Path]:
    """Copy a checkout's weights/<model>.<tag>.* (weight files and their model cards) into the user cache
    ($VISIONZOO_HOME/weights, or `dest_dir`), so an installed package finds them by tag.

    `source`: a checkout (its weights/ folder is used) or a weights folder; default: this checkout's.
    `model` / `tag`: which files (None: all). Each weight file is checked against the sha256 in its card
    before it is copied; copies go through a temporary file renamed into place. Returns the files written
    (or already identical) in the cache."""
    src = Path(source).expanduser() if source is not None else REPO_WEIGHTS_DIR
    if (src / "weights").is_dir():
        src = src / "weights"
    if not src.is_dir():
        raise WeightsError(
            f"no weights folder at {src}: pass the path of a visionzoo checkout (or of its weights/ folder)"
        )
    dest = Path(dest_dir).expanduser() if dest_dir is not None else user_cache_dir()
    pattern = f"{model or '*'}.{tag or '*'}.*"
    files = sorted(p for p in src.glob(pattern) if p.is_file() and p.suffix in (*WEIGHT_SUFFIXES, ".json"))
    weight_files = [p for p in files if p.suffix != ".json"]
    if not weight_files:
        have = sorted({".".join(p.name.split(".")[:2]) for p in src.glob("*.*.safetensors")})
        raise WeightsError(
            f"no weight files matching {pattern} in {src}. Available: {', '.join(have) or '(none)'}"
        )
    for weight in weight_files:
        card = read_card(weight)
        if card.get("sha256"):
            actual = sha256_file(weight)
            if not actual.startswith(card["sha256"].lower()):
                with open(weight, "rb") as f:
                    lfs = f.read(len(_LFS_POINTER)) == _LFS_POINTER
                hint = " It is a Git LFS pointer: run 'git lfs pull' in the checkout first." if lfs else ""
                raise WeightsError(
                    f"{weight}: sha256 mismatch: the file has {actual}, which differs from its model card's "
                    f"{card['sha256']}; not copied.{hint}"
                )
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for file in files:
        target = dest / file.name
        if not (target.is_file() and target.stat().st_size == file.stat().st_size
                and sha256_file(target) == sha256_file(file)):
            tmp = target.with_name(f".{target.stem}.{uuid.uuid4().hex[:12]}.incomplete{target.suffix}")
            try:
                shutil.copyfile(file, tmp)
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
        written.append(target)
    return written


def push_to_hub(
    weights_file: str | os.PathLike,
    repo_id: str,
    *,
    revision: str | None = None,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Upload a published weight file and its model card to the Hugging Face Hub repository `repo_id` (created
    if needed) as model.safetensors, config.json and a README.md made from the card: the layout that
    `weights="hf-hub:<repo_id>"` reads. The file is checked against its card first. Returns the commit URL.
    Uses huggingface_hub's client (HF_TOKEN or `hf auth login` for the token, HF_ENDPOINT for the server)."""
    path = Path(weights_file)
    if path.suffix != ".safetensors" or not path.is_file():
        raise WeightsError(f"{path}: expected a published .safetensors weight file (python -m visionzoo.publish)")
    card = read_card(path)
    if not card.get("model") or not card.get("sha256"):
        raise WeightsError(
            f"{path}: the model card {path.with_suffix('.json')} is missing or lacks 'model'/'sha256'; "
            f"write it with python -m visionzoo.publish"
        )
    verify_sha256(ResolvedWeights(path, "path", None, card, card["sha256"]))
    if not _HF_REPO_ID.fullmatch(repo_id):
        raise WeightsError(f"push to hub: expected a repository id ORG/NAME, got {repo_id!r}")
    try:  # local: the optional 'hub' extra, needed only to push
        from huggingface_hub import CommitOperationAdd, HfApi
    except ImportError:
        raise WeightsError(
            "pushing to the Hugging Face Hub needs the huggingface_hub package: pip install 'visionzoo[hub]'"
        ) from None
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    operations = [
        CommitOperationAdd(HF_WEIGHTS_FILE, str(path)),
        CommitOperationAdd(HF_CARD_FILE, json.dumps(card, indent=2).encode()),
        CommitOperationAdd("README.md", hub_readme(card, repo_id).encode()),
    ]
    info = api.create_commit(
        repo_id, operations, revision=revision,
        commit_message=commit_message or f"visionzoo {card['model']}.{card.get('tag', 'weights')}",
    )
    return info.commit_url


def hub_readme(card: dict, repo_id: str) -> str:
    """A Hub model page from a model card: metadata header, what the weights are, how to load them."""
    model, tag = card["model"], card.get("tag", "")
    metrics = card.get("metrics") or {}
    lines = [
        "---",
        "library_name: visionzoo",
        "tags:",
        "- visionzoo",
        f"- {card.get('task', 'vision')}",
        "---",
        "",
        f"# {model}.{tag}" if tag else f"# {model}",
        "",
        f"visionzoo weights for `{model}` ({card.get('task', 'vision')}), sha256 `{card['sha256']}`.",
        "",
        "```python",
        "import visionzoo",
        "",
        f'model = visionzoo.create_model("{model}", weights="hf-hub:{repo_id}")',
        "```",
        "",
    ]
    if metrics:
        lines += ["| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {v} |" for k, v in metrics.items() if isinstance(v, (int, float, str))]
        lines.append("")
    if card.get("reproduce"):
        lines += ["Reproduce:", "", "```bash", *card["reproduce"], "```", ""]
    return "\n".join(lines)
