"""Triton Inference Server backend: the networks run on a (local or shared) Triton server over gRPC.

    runner = TritonRunner("analyser", url="grpc://127.0.0.1:8001")
    out = runner.run({"image": batch})           # same Runner interface as every other backend

The server is `python -m engines.serve` (PyTriton, local) or a stock Triton serving the repository of
`python -m export.triton`. At start-up the server must answer and its model metadata must match our
contract (engines.wire); otherwise one line says what is wrong. Mid-stream, a call that fails because
the server went away (stopped, restarting, network down) raises `ServerUnavailable` at once, and the
runner tries a fresh connection at most every `retry_s` seconds (never blocking a frame for longer
than `timeout_s`); the caller (stream.outage) passes those frames through unreconstructed and counts
them. When the server is back, calls simply succeed again.
"""
from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from engines.base import BackendUnavailable, ModelError, Runner, model_name_of, resolve_model
from engines.wire import TRITON_DTYPE, from_wire, load_contract, to_wire, wire_dims

TRITONCLIENT_MISSING = "the Triton backend needs tritonclient: pip install .[triton] (tritonclient[grpc])"
DEFAULT_TIMEOUT_S = 2.0
DEFAULT_RETRY_S = 0.5


class ServerUnavailable(ModelError):
    """The Triton server did not answer this call (gone, restarting, too slow); the next call may work."""


def parse_triton_url(url: str) -> tuple[str, str]:
    """`grpc://host:port` or `host:port` -> ("host:port" for tritonclient, the same for messages).

    User names and passwords in the URL are never kept (they must not reach a log).
    """
    text = str(url or "").strip()
    if not text:
        raise ModelError("--backend triton needs --triton-url grpc://host:port (e.g. grpc://127.0.0.1:8001)")
    parts = urlsplit(text if "://" in text else f"grpc://{text}")
    if parts.scheme != "grpc":
        raise ModelError(f"--triton-url must be grpc://host:port (the gRPC endpoint), got a {parts.scheme}:// URL")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        raise ModelError(f"--triton-url must be grpc://host:port, got {parts.hostname or '?'} without a valid port")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{port}", f"grpc://{host}:{port}"


def _import_client():
    try:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException
    except ImportError:
        raise BackendUnavailable(TRITONCLIENT_MISSING) from None
    return grpcclient, InferenceServerException


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", lambda: None)() or exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0]


class TritonRunner(Runner):
    name = "triton"

    def __init__(self, model: str | Path, url: str, timeout_s: float = DEFAULT_TIMEOUT_S,
                 retry_s: float = DEFAULT_RETRY_S):
        self._grpc, self._error = _import_client()
        self.target, self.url = parse_triton_url(url)
        p = Path(model)
        self.model_name = model_name_of(resolve_model(model)) if (p.suffix or len(p.parts) > 1) else str(model)
        self.contract = load_contract(self.model_name)
        self.model_path = self.contract.onnx_path
        self.input_specs = list(self.contract.inputs)
        self.output_specs = list(self.contract.outputs)
        self.device = self.url
        self.timeout_s, self.retry_s = float(timeout_s), float(retry_s)
        self.reconnects = 0          # successful reconnections after an outage
        self.failed_calls = 0        # calls that raised ServerUnavailable
        self._client = None
        self._next_try = 0.0
        try:
            self._connect(at_start=True)
        except ServerUnavailable as e:
            raise BackendUnavailable(f"Triton server {self.url} is unreachable ({e}); start one with "
                                     f"python -m engines.serve --grpc-port PORT --http-port PORT") from None

    # -- connection --------------------------------------------------------------------------
    def _connect(self, at_start: bool = False) -> None:
        """A fresh channel (no inherited gRPC back-off), the server ready, the model's metadata checked.

        A model that is not ready is a configuration error at start-up, and a server still loading its
        models (restarting) afterwards."""
        self._close_client()
        client = self._grpc.InferenceServerClient(self.target)
        try:
            if not client.is_server_ready(client_timeout=self.timeout_s):
                raise ServerUnavailable("server not ready")
            if not client.is_model_ready(self.model_name, client_timeout=self.timeout_s):
                if not at_start:
                    raise ServerUnavailable(f"model {self.model_name!r} not loaded yet")
                raise ModelError(f"Triton server {self.url} does not serve model {self.model_name!r} (ready): "
                                 f"serve the repository of python -m export.triton, or python -m engines.serve")
            meta = client.get_model_metadata(self.model_name, client_timeout=self.timeout_s, as_json=True)
        except self._error as e:
            client.close()
            raise ServerUnavailable(_first_line(e)) from None
        except BaseException:
            client.close()
            raise
        self.check_metadata(meta)
        self._client = client

    def check_metadata(self, meta: dict) -> None:
        """The server's inputs and outputs must be our contract's: names, FP32, [-1, dims...]."""
        for kind, specs in (("inputs", self.input_specs), ("outputs", self.output_specs)):
            served = {t["name"]: t for t in meta.get(kind, [])}
            want = [s.name for s in specs]
            if sorted(served) != sorted(want):
                raise ModelError(f"Triton model {self.model_name!r} at {self.url} has {kind} "
                                 f"{', '.join(sorted(served)) or 'none'}; expected {', '.join(want)}")
            for s in specs:
                t = served[s.name]
                shape = [int(d) for d in t.get("shape", [])]
                expected = [-1, *wire_dims(s)]
                if t.get("datatype") != TRITON_DTYPE or shape != expected:
                    raise ModelError(f"Triton model {self.model_name!r} at {self.url}: {kind[:-1]} {s.name!r} is "
                                     f"{t.get('datatype')} {shape}, expected {TRITON_DTYPE} {expected}")

    def _close_client(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # noqa: BLE001 - a dead channel may complain on close
                pass
            self._client = None

    def _went_away(self, reason: str) -> ServerUnavailable:
        self._close_client()
        self.failed_calls += 1
        self._next_try = time.monotonic() + self.retry_s
        return ServerUnavailable(f"Triton server {self.url}: {reason}")

    # -- Runner --------------------------------------------------------------------------------
    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = self.check_inputs(inputs)
        if n == 0:
            return self.empty_outputs()
        if self._client is None:
            if self._grpc is None:
                raise ModelError(f"{self._label()}: runner is closed")
            if time.monotonic() < self._next_try:
                self.failed_calls += 1
                raise ServerUnavailable(f"Triton server {self.url}: reconnecting")
            try:
                self._connect()
            except ServerUnavailable as e:
                raise self._went_away(str(e)) from None
            self.reconnects += 1
        wire_inputs = []
        for s in self.input_specs:
            a = to_wire(s, inputs[s.name])
            t = self._grpc.InferInput(s.name, list(a.shape), TRITON_DTYPE)
            t.set_data_from_numpy(a)
            wire_inputs.append(t)
        outputs = [self._grpc.InferRequestedOutput(s.name) for s in self.output_specs]
        try:
            result = self._client.infer(self.model_name, wire_inputs, outputs=outputs, client_timeout=self.timeout_s)
        except self._error as e:
            raise self._went_away(_first_line(e)) from None
        return {s.name: from_wire(s, result.as_numpy(s.name)) for s in self.output_specs}

    def close(self) -> None:
        self._close_client()
        self._grpc = None
