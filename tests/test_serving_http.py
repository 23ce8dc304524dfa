"""The pyfunc model behind real HTTP servers on 127.0.0.1: ``mlflow models serve`` (REST predictions and 4xx errors
for bad input) and ``mlflow server`` (registering and loading through a tracking server)."""
from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
requests = pytest.importorskip("requests")
pytest.importorskip("mlflow")

import actionclip  # noqa: E402
from actionclip.serving import registry  # noqa: E402
from actionclip.serving.packaging import example_clip_bytes  # noqa: E402

pytestmark = pytest.mark.server

LABELS = ["waving", "clapping", "jumping"]
MAX_VIDEO_BYTES = 200_000
MAX_LABELS = 50
GATE_MAX_BODY = 1_000_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    # own session, so that teardown can stop the server together with its worker processes
    return subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT, env={**os.environ, **env},
                            start_new_session=True)


def _wait(proc: subprocess.Popen, url: str, log: Path, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.25)
    pytest.fail(f"{url} did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Start ``mlflow server`` first (it is the slowest to come up), then register a tiny model in a SQLite
    registry and serve its champion with ``mlflow models serve``. Both keep starting while the tests run."""
    root = tmp_path_factory.mktemp("http")
    procs: list[subprocess.Popen] = []
    tport = _free_port()
    tlog = root / "tracking.log"
    procs.append(_start([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                         f"sqlite:///{root / 'server.db'}", "--artifacts-destination", str(root / "server-artifacts"),
                         "--host", "127.0.0.1", "--port", str(tport), "--workers", "1"],
                        tlog, {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}))
    try:
        torch.manual_seed(0)
        model_dir = root / "model"
        actionclip.create_model("tiny-8").save_pretrained(model_dir)
        uri = f"sqlite:///{root / 'mlflow.db'}"
        registry.register_model(model_dir, {"top1": 0.5}, labels=LABELS, pipeline_run_id="http-1", tracking_uri=uri)
        sport = _free_port()
        slog = root / "serve.log"
        procs.append(_start([sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/actionclip@champion",
                             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(sport)], slog, {
            "MLFLOW_TRACKING_URI": uri,
            "ACTIONCLIP_SERVING_MAX_VIDEO_BYTES": str(MAX_VIDEO_BYTES),
            "ACTIONCLIP_SERVING_MAX_LABELS": str(MAX_LABELS),
            # paths are closed by default; this server names the test's folder as its one allowed root
            "ACTIONCLIP_SERVING_VIDEO_ROOTS": str(root),
        }))
        # the deployed shape: the gate in front of a scoring server with the default (closed) limits
        gport, uport = _free_port(), _free_port()
        glog = root / "gate.log"
        procs.append(_start([sys.executable, "-m", "actionclip.serving.gate", "--model-uri",
                             "models:/actionclip@champion", "--port", str(gport), "--upstream-port", str(uport),
                             "--max-body-bytes", str(GATE_MAX_BODY)], glog, {"MLFLOW_TRACKING_URI": uri}))
        clip = root / "clip.mp4"
        clip.write_bytes(example_clip_bytes(frames=16, size=64))
        yield {"root": root, "model_dir": model_dir, "clip": clip,
               "serve": (procs[1], f"http://127.0.0.1:{sport}", slog),
               "gate": (procs[2], f"http://127.0.0.1:{gport}", glog),
               "tracking": (procs[0], f"http://127.0.0.1:{tport}", tlog)}
    finally:
        for p in procs:
            _stop(p)


@pytest.fixture(scope="module")
def scoring(env):
    proc, url, log = env["serve"]
    _wait(proc, url + "/ping", log)
    return url


def _post(url: str, payload, **kw) -> requests.Response:
    return requests.post(url + "/invocations", json=payload, timeout=120, **kw)


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def test_base64_and_path_give_the_same_answer(scoring, env):
    r = _post(scoring, {"inputs": [{"video": _b64(env["clip"])}, {"video": str(env["clip"]), "return_all": True}]})
    assert r.status_code == 200, r.text
    a, b = r.json()["predictions"]
    assert a["labels"] == b["labels"] and sorted(a["labels"]) == sorted(LABELS)  # top_k 5 capped at 3 labels
    assert a["probs"] == pytest.approx(b["probs"], abs=1e-6)
    assert sum(a["probs"]) == pytest.approx(1.0, abs=1e-5)
    assert a["probs"] == sorted(a["probs"], reverse=True)
    assert set(b["all_probs"]) == set(LABELS) and sum(b["all_probs"].values()) == pytest.approx(1.0, abs=1e-5)


def test_custom_labels_templates_and_mixed_rows(scoring, env):
    custom = ["riding a bike", "swimming", "cooking", "reading"]
    r = _post(scoring, {"inputs": [
        {"video": _b64(env["clip"]), "labels": custom, "templates": ["a video of {}", "someone is {}"],
         "top_k": 2, "return_all": True},
        {"video": env["clip"].as_uri()},  # model's own labels in the same request
    ]})
    assert r.status_code == 200, r.text
    first, second = r.json()["predictions"]
    assert len(first["labels"]) == 2 and set(first["labels"]) <= set(custom)
    assert set(first["all_probs"]) == set(custom)
    assert sum(first["all_probs"].values()) == pytest.approx(1.0, abs=1e-5)
    assert first["probs"] == [first["all_probs"][lab] for lab in first["labels"]]
    assert set(second["labels"]) == set(LABELS) and "all_probs" not in second


BAD = {
    "empty labels": ({"labels": []}, "'labels' is empty"),
    "too many labels": ({"labels": [f"label {i}" for i in range(MAX_LABELS + 1)]}, "too many labels: 51 > 50"),
    "template without {}": ({"templates": ["a video"]}, "must contain exactly one '{}'"),
    "unknown field": ({"label": ["a"]}, "Extra inputs are not permitted"),
    "wrong type": ({"top_k": "two"}, "top_k"),
    "bad top_k": ({"top_k": 0}, "'top_k' must be between 1"),
    "unreadable video": ({"video": base64.b64encode(b"this is not a video" * 10).decode()}, "unreadable video"),
    "video too large": ({"video": base64.b64encode(b"\0" * (MAX_VIDEO_BYTES + 1)).decode()}, "video is too large"),
    "path outside the roots": ({"video": "/nonexistent/clip.mp4"}, "outside the allowed directories"),
    "remote URL": ({"video": "https://example.com/clip.mp4"}, "unsupported video URI scheme"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_a_400(scoring, env, case):
    row, message = BAD[case]
    r = _post(scoring, {"inputs": [{"video": str(env["clip"]), **row}]})
    assert r.status_code == 400, (case, r.status_code, r.text[:500])
    assert message in r.json()["message"]


def test_bad_envelopes_and_server_stays_up(scoring, env):
    assert _post(scoring, {"inputs": []}).status_code == 400
    assert _post(scoring, {"dataframe_records": [{"video": str(env["clip"])}]}).status_code == 400
    r = requests.post(scoring + "/invocations", data=b"{not json", headers={"Content-Type": "application/json"},
                      timeout=30)
    assert 400 <= r.status_code < 500
    # after every bad request above (and the parametrised ones), the same process still answers
    assert env["serve"][0].poll() is None
    assert requests.get(scoring + "/ping", timeout=5).status_code == 200
    r = _post(scoring, {"inputs": [{"video": str(env["clip"]), "top_k": 1}]})
    assert r.status_code == 200 and len(r.json()["predictions"][0]["labels"]) == 1


def test_register_and_load_through_a_tracking_server(env):
    import mlflow

    proc, url, log = env["tracking"]
    _wait(proc, url + "/health", log)
    first = registry.register_model(env["model_dir"], {"top1": 0.4}, labels=LABELS, pipeline_run_id="srv-1",
                                    tracking_uri=url)
    assert first.version == "1" and first.promoted
    again = registry.register_model(env["model_dir"], {"top1": 0.4}, labels=LABELS, pipeline_run_id="srv-1",
                                    tracking_uri=url)
    assert again.reused and again.version == "1"
    # proxied artifacts: the location is an mlflow-artifacts URI served by the tracking server
    location = registry.resolve("actionclip@champion", tracking_uri=url)
    assert location.startswith("mlflow-artifacts:/"), location
    assert list((env["root"] / "server-artifacts").rglob("model.safetensors"))
    with registry.using_tracking_uri(url):
        model = mlflow.pyfunc.load_model("models:/actionclip@champion", model_config={"allow_paths": True})
    out = model.predict([{"video": str(env["clip"])}])
    assert sorted(out[0]["labels"]) == sorted(LABELS)


# ------------------------------------------------------------------------------------------------------ the gate
@pytest.fixture(scope="module")
def gate(env):
    proc, url, log = env["gate"]
    _wait(proc, url + "/ping", log)
    return url


def test_gate_serves_base64_and_refuses_server_paths(gate, env):
    r = _post(gate, {"inputs": [{"video": _b64(env["clip"]), "top_k": 1}]})
    assert r.status_code == 200, r.text
    for video in ("/etc/passwd", str(env["clip"]), env["clip"].as_uri()):
        r = _post(gate, {"inputs": [{"video": video}]})
        assert r.status_code == 400 and "base64-encoded videos only" in r.json()["message"], r.text
        assert "passwd" not in r.text and str(env["clip"]) not in r.text


def test_gate_refuses_a_big_body_before_reading_it(gate):
    import http.client
    from urllib.parse import urlparse

    u = urlparse(gate)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    # announce 80 MB, send only the first kilobyte: the answer comes without the rest ever being sent
    conn.putrequest("POST", "/invocations")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(80 * 1024 * 1024))
    conn.endheaders()
    conn.send(b'{"inputs": [{"video": "' + b"A" * 1000)
    resp = conn.getresponse()
    body = resp.read()
    assert resp.status == 413 and len(body) < 300 and b"over the limit" in body
    conn.close()
    # chunked, no Content-Length: cut off once the limit is passed
    def chunks():
        yield b'{"inputs": [{"video": "'
        for _ in range(40):
            yield b"A" * 100_000
    r = requests.post(gate + "/invocations", data=chunks(), headers={"Content-Type": "application/json"}, timeout=60)
    assert r.status_code == 413 and len(r.content) < 300


def test_gate_errors_never_echo_the_request(gate, env):
    marker = "ECHO-MARKER-" + "q" * 30
    bad = [{"video": _b64(env["clip"]), "labels": [marker, marker]},        # the model's own check
           {"video": _b64(env["clip"]), "top_k": marker},                    # MLflow's schema check
           {"video": _b64(env["clip"]), "labels": [marker], "templates": [marker]},
           {"video": base64.b64encode(marker.encode() * 2000).decode()}]    # unreadable video, ~100 KB body
    for row in bad:
        r = _post(gate, {"inputs": [row]})
        assert r.status_code == 400, r.text[:300]
        assert "ECHO-MARKER" not in r.text and len(r.text) < 1000, r.text[:1000]
        assert set(r.json()) == {"error_code", "message"}
    # the direct scoring server (not reachable in the pod: it listens on loopback) quotes the input
    r = _post(env["serve"][1], {"inputs": [{"video": _b64(env["clip"]), "labels": [marker, marker]}]})
    assert r.status_code == 400
