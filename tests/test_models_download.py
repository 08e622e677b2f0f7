"""Weights downloaded on first use, as torchvision and timm do, and never when offline.

No internet: a localhost HTTP server serves real checkpoint files (the torch hub's plain URL download, and the
Hugging Face hub's ``resolve`` protocol through ``HF_ENDPOINT``), into temporary ``TORCH_HOME`` / ``HF_HOME``
caches. The loader's own code runs unmodified.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from semantic_pullbacks.errors import WeightsUnavailableError
from semantic_pullbacks.models import load

OFFLINE_VARIABLES = ("SEMANTIC_PULLBACKS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
HF_COMMIT = "0123456789abcdef0123456789abcdef01234567"


class _Files(http.server.BaseHTTPRequestHandler):
    """Serves ``files`` (path -> bytes) for GET and HEAD, with the headers the Hugging Face hub sends."""

    files: dict[str, bytes] = {}
    requests: list[tuple[str, str]] = []

    def _reply(self, body: bool) -> None:
        self.requests.append((self.command, self.path))
        data = self.files.get(self.path.split("?")[0])
        if data is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("X-Repo-Commit", HF_COMMIT)
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_GET(self) -> None:
        self._reply(body=True)

    def do_HEAD(self) -> None:
        self._reply(body=False)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server():
    handler = type("Handler", (_Files,), {"files": {}, "requests": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield handler, f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def online(monkeypatch):
    for name in OFFLINE_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def _checkpoint(state: dict[str, torch.Tensor], stem: str) -> tuple[str, bytes]:
    """torch hub's naming: ``stem-<first 8 hex digits of the file's sha256>.pth``, which it checks on download."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    return f"{stem}-{hashlib.sha256(data).hexdigest()[:8]}.pth", data


def test_torchvision_weights_download_once_into_the_torch_hub_cache(server, online, tmp_path, monkeypatch):
    import torchvision

    handler, base = server
    torch.manual_seed(0)
    reference = torchvision.models.mobilenet_v3_small().eval()
    name, data = _checkpoint(reference.state_dict(), "mobilenet_v3_small")
    handler.files[f"/{name}"] = data
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    url = f"{base}/{name}"

    x = torch.rand(1, 3, 224, 224) * 2 - 1
    with torch.no_grad():
        normalize = torchvision.transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        expected = reference(normalize((x + 1) / 2))
        downloaded = load("torchvision:mobilenet_v3_small", weights=url)
        torch.testing.assert_close(downloaded.model(x), expected)
    cached = tmp_path / "torch" / "hub" / "checkpoints" / name
    assert cached.read_bytes() == data and downloaded.weights == str(cached)
    assert handler.requests == [("GET", f"/{name}")]

    # from now on the cache answers, with downloads off too: no second request
    monkeypatch.setenv("SEMANTIC_PULLBACKS_OFFLINE", "1")
    again = load("torchvision:mobilenet_v3_small", weights=url)
    with torch.no_grad():
        torch.testing.assert_close(again.model(x), expected)
    assert len(handler.requests) == 1


@pytest.mark.parametrize("switch", [*OFFLINE_VARIABLES, "argument"])
def test_offline_never_downloads_and_says_what_to_do(server, online, tmp_path, monkeypatch, switch):
    handler, base = server
    handler.files["/net-0badc0de.pth"] = b"never fetched"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    if switch != "argument":
        monkeypatch.setenv(switch, "1")
    with pytest.raises(WeightsUnavailableError, match="downloads are off") as error:
        load("torchvision:mobilenet_v3_small", weights=f"{base}/net-0badc0de.pth", offline=switch == "argument")
    message = str(error.value)
    assert str(tmp_path / "hub" / "checkpoints" / "net-0badc0de.pth") in message  # where to put the file
    assert "weights=" in message and (switch == "argument" or switch in message)
    assert handler.requests == []


def test_failed_downloads_are_clear_errors_and_leave_no_file_behind(server, online, tmp_path, monkeypatch):
    handler, base = server
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    _, data = _checkpoint({"w": torch.zeros(2)}, "net")
    handler.files["/net-00000000.pth"] = data  # the file does not match the hash in its name
    with pytest.raises(WeightsUnavailableError, match=r"could not download.*SEMANTIC_PULLBACKS_OFFLINE"):
        load("torchvision:mobilenet_v3_small", weights=f"{base}/net-00000000.pth")
    with pytest.raises(WeightsUnavailableError, match=r"could not download.*HTTP"):
        load("torchvision:mobilenet_v3_small", weights=f"{base}/missing-12345678.pth")
    checkpoints = tmp_path / "hub" / "checkpoints"
    assert not checkpoints.exists() or list(checkpoints.iterdir()) == []


_TIMM_CHILD = """
import json, os, sys, torch
from semantic_pullbacks.models import load
x = torch.linspace(-1, 1, 3 * 64 * 64).reshape(1, 3, 64, 64)
with torch.no_grad():
    first = load("timm:resnet10t")
    os.environ["SEMANTIC_PULLBACKS_OFFLINE"] = "1"
    second = load("timm:resnet10t")
    print(json.dumps({"weights": first.weights, "same": bool(torch.equal(first.model(x), second.model(x))),
                      "out": first.model(x).flatten()[:20].tolist()}))
"""


def test_timm_weights_download_from_the_hugging_face_hub_once(server, online, tmp_path):
    """timm's default source: ``hf_hub_download`` into ``HF_HOME``, here from a local hub (``HF_ENDPOINT``)."""
    import timm
    from safetensors.torch import save

    handler, base = server
    torch.manual_seed(0)
    reference = timm.create_model("resnet10t", pretrained=False).eval()
    data = save(reference.state_dict())
    hub_id = reference.pretrained_cfg["hf_hub_id"]
    handler.files[f"/{hub_id}/resolve/main/model.safetensors"] = data
    env = {k: v for k, v in os.environ.items() if k not in OFFLINE_VARIABLES}
    env.update(HF_ENDPOINT=base, HF_HOME=str(tmp_path / "hf"), TORCH_HOME=str(tmp_path / "torch"))
    done = subprocess.run([sys.executable, "-c", _TIMM_CHILD], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])

    x = torch.linspace(-1, 1, 3 * 64 * 64).reshape(1, 3, 64, 64)
    cfg = reference.pretrained_cfg
    mean, std = torch.tensor(cfg["mean"]).view(1, 3, 1, 1), torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = reference(((x + 1) / 2 - mean) / std).flatten()[:20]
    torch.testing.assert_close(torch.tensor(result["out"]), expected)
    assert result["same"]
    assert Path(result["weights"]).read_bytes() == data
    assert Path(result["weights"]).is_relative_to(tmp_path / "hf")
    downloads = [r for r in handler.requests if r == ("GET", f"/{hub_id}/resolve/main/model.safetensors")]
    assert len(downloads) == 1, handler.requests  # the second load came from the cache
