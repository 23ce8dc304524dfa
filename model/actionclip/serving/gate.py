"""``python -m actionclip.serving.gate``: the serving container's front door, in front of ``mlflow models serve``.

MLflow's scoring server reads a request body whole before anything checks its size, and quotes the request data in
its error messages (``Failed to predict data '<the whole input>'``: an 80 MB body got an 80 MB error back). The gate
is a small ASGI app, run by uvicorn on the container's port, that

- refuses a body over ``--max-body-bytes`` with 413 before reading it: at once from Content-Length, and while
  streaming for chunked bodies (the bytes past the limit are never read);
- forwards everything else unchanged to the scoring server, which it starts as its child on 127.0.0.1 (so nothing
  else can reach it), and exits when the child does (the kubelet then restarts the container);
- answers errors with MLflow's JSON shape (``error_code``, ``message``) minus any copy of the request: the echo
  prefix and pydantic's ``input_value=`` are cut, the stack trace dropped, the message capped.
"""
from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import re
import signal
import subprocess
import sys
from typing import Any, Awaitable, Callable

DEFAULT_MAX_BODY = 96 * 1024 * 1024   # 16 videos would not fit anyway: ServingLimits caps each at 64 MB decoded
MAX_MESSAGE = 500
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization",
               "proxy-authenticate", "content-length", "host"}
_ECHO = re.compile(r"^Failed to predict data '.*'\. \nError: ", re.S)
_INPUT_VALUE = re.compile(r"input_value=.*?(?=, input_type=|\]$|$)", re.S | re.M)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def clean_error(status: int, payload: bytes) -> bytes:
    """An error body in MLflow's JSON shape that carries no request data."""
    try:
        doc = json.loads(payload)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and "message" in doc:
        message, code = str(doc["message"]), str(doc.get("error_code") or "BAD_REQUEST")
    else:
        message, code = payload.decode("utf-8", "replace"), "BAD_REQUEST" if status < 500 else "INTERNAL_ERROR"
    message = _INPUT_VALUE.sub("input_value=<omitted>", _ECHO.sub("", message)).strip()
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE] + " [truncated]"
    return json.dumps({"error_code": code, "message": message or f"request failed (HTTP {status})"}).encode()


class Gate:
    """ASGI app: body limit, then a blocking forward (in a thread) to the scoring server at ``upstream``."""

    def __init__(self, upstream_host: str, upstream_port: int, max_body: int, timeout_s: float = 300.0):
        self.host, self.port, self.max_body, self.timeout_s = upstream_host, upstream_port, max_body, timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            return await self._too_large(send)
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_body:
                return await self._too_large(send)
            more = message.get("more_body", False)
        path = scope.get("raw_path") or scope["path"].encode()
        target = path.decode("latin-1") + ("?" + scope["query_string"].decode("latin-1") if scope["query_string"] else "")
        forward = {k: v for k, v in headers.items() if k not in _HOP_BY_HOP}
        try:
            status, out_headers, payload = await asyncio.to_thread(self._forward, scope["method"], target, forward,
                                                                   bytes(body))
        except OSError:
            status, out_headers, payload = 503, [], b'{"error_code": "TEMPORARILY_UNAVAILABLE", "message": "model server is not ready"}'
        if status >= 400:
            payload = clean_error(status, payload)
            out_headers = [("content-type", "application/json")]
        await self._respond(send, status, out_headers, payload)

    def _forward(self, method: str, target: str, headers: dict[str, str], body: bytes):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        try:
            conn.request(method, target, body=body or None, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
            keep = [(k.lower(), v) for k, v in resp.getheaders() if k.lower() not in _HOP_BY_HOP]
            return resp.status, keep, payload
        finally:
            conn.close()

    async def _too_large(self, send: Send) -> None:
        payload = json.dumps({"error_code": "REQUEST_LIMIT_EXCEEDED",
                              "message": f"request body over the limit of {self.max_body} bytes"}).encode()
        # Connection: close, because the rest of the body is never read
        await self._respond(send, 413, [("content-type", "application/json"), ("connection", "close")], payload)

    @staticmethod
    async def _respond(send: Send, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers if k != "content-length"]
        raw.append((b"content-length", str(len(payload)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": payload})


def scoring_command(model_uri: str, port: int, workers: int) -> list[str]:
    """The scoring server the gate runs: MLflow's, on loopback only."""
    return [sys.executable, "-m", "mlflow", "models", "serve", "--model-uri", model_uri, "--env-manager", "local",
            "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m actionclip.serving.gate", description=__doc__.split("\n\n")[0])
    p.add_argument("--model-uri", required=True, help="what `mlflow models serve --model-uri` loads")
    p.add_argument("--host", default="127.0.0.1", help="address the gate listens on (0.0.0.0 in a pod)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--upstream-port", type=int, default=8081, help="loopback port of the scoring server")
    p.add_argument("--workers", type=int, default=1, help="scoring server workers")
    p.add_argument("--max-body-bytes", type=int,
                   default=int(os.environ.get("ACTIONCLIP_SERVING_MAX_BODY_BYTES", DEFAULT_MAX_BODY)),
                   help="largest request body accepted (env ACTIONCLIP_SERVING_MAX_BODY_BYTES)")
    return p


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    args = build_parser().parse_args(argv)
    if args.max_body_bytes < 1:
        raise SystemExit(f"gate: --max-body-bytes must be positive, got {args.max_body_bytes}")
    timeout = float(os.environ.get("MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT", "60")) + 5
    # its own process group, so that stopping it also stops the uvicorn workers it starts
    child = subprocess.Popen(scoring_command(args.model_uri, args.upstream_port, args.workers),
                             start_new_session=True)
    # a signal to the gate (the kubelet's SIGTERM, a test's SIGTERM to the gate's group) stops the child too
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)

        def relay(signum, frame, previous=previous):
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
            if callable(previous):
                previous(signum, frame)
            else:
                raise SystemExit(128 + signum)

        signal.signal(sig, relay)
    server = uvicorn.Server(uvicorn.Config(Gate("127.0.0.1", args.upstream_port, args.max_body_bytes, timeout),
                                           host=args.host, port=args.port, lifespan="on", log_level="warning"))

    async def watch() -> None:
        while child.poll() is None and not server.should_exit:
            await asyncio.sleep(1.0)
        server.should_exit = True

    async def run() -> None:
        await asyncio.gather(server.serve(), watch())

    try:
        asyncio.run(run())
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGTERM)
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
    if child.returncode not in (None, 0, -signal.SIGTERM):
        print(f"gate: the scoring server exited with {child.returncode}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
