"""A local Triton Inference Server for the shipped networks, through PyTriton.

    python -m engines.serve --grpc-port 8001 --http-port 8000 [--backend onnxruntime] [--device cpu]
                            [--max-batch 16] [--queue-delay-us 2000] [--address 0.0.0.0]

PyTriton (`pip install .[triton]`) bundles the tritonserver binary and runs on the CPU. Its server has
only the Python backend, so the models are served by binding our own runners (`engines.create_runner`,
ONNX Runtime by default) as Python models, with Triton's dynamic batching merging the requests of every
stream and client into one model call. The tensors are the ones `python -m export.triton` declares for a
stock server (engines.wire), so clients (`--backend triton --triton-url grpc://host:port`) cannot tell the
two apart. Prints a line containing `ready` when it accepts requests; SIGTERM or Ctrl-C stop it cleanly.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import sysconfig
import tempfile
from pathlib import Path

import numpy as np

from engines.base import ModelError
from engines.wire import SHIPPED_MODELS, from_wire, load_contract, to_wire, wire_dims

DEFAULT_MAX_BATCH = 16
DEFAULT_QUEUE_DELAY_US = 2000
PYTRITON_MISSING = "the local Triton server needs PyTriton: pip install .[triton] (nvidia-pytriton)"
EXIT_USAGE = 2
EXIT_FAILURE = 1


def interpreter_library_env(environ=None) -> dict:
    """The environment for Triton's processes, with this interpreter's libpython first on the loader path.

    Triton's Python-backend stub links libpython3.X dynamically; on an interpreter built outside the
    system (pyenv, conda) it would otherwise load the *system* libpython, whose threading module does not
    match ours (`'_thread.RLock' object has no attribute '_recursion_count'` in multiprocessing).
    """
    env = dict(os.environ if environ is None else environ)
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and sysconfig.get_config_var("Py_ENABLE_SHARED") and Path(libdir).is_dir():
        parts = [p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p]
        if not parts or parts[0] != libdir:
            env["LD_LIBRARY_PATH"] = ":".join([libdir] + [p for p in parts if p != libdir])
    return env


def check_port(address: str, port: int, what: str) -> None:
    """One clear line when `port` is out of range or already taken on `address`."""
    if not 1 <= port <= 65535:
        raise ModelError(f"{what} {port} is not a TCP port (1-65535)")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError as e:
            raise ModelError(f"{what} {port} on {address} is not available: {e.strerror or e}") from None


def make_infer(runner, contract):
    """The batched inference callable PyTriton calls with every model call Triton's batcher forms."""
    from pytriton.decorators import batch

    inputs, outputs = contract.inputs, contract.outputs

    @batch
    def infer(**arrays):
        feed = {s.name: np.ascontiguousarray(from_wire(s, arrays[s.name]), np.float32) for s in inputs}
        result = runner.run(feed)
        return {s.name: to_wire(s, result[s.name]) for s in outputs}

    return infer


def start_server(grpc_port: int, http_port: int, *, backend: str = "onnxruntime", device: str | None = None,
                 threads: int | None = None, max_batch: int = DEFAULT_MAX_BATCH,
                 queue_delay_us: int = DEFAULT_QUEUE_DELAY_US, address: str = "0.0.0.0", models=SHIPPED_MODELS,
                 log_file: Path | None = None):
    """Start Triton with the shipped models bound; returns (triton, runners) once it accepts requests."""
    if grpc_port == http_port:
        raise ModelError(f"--grpc-port and --http-port must differ (both {grpc_port})")
    if max_batch < 1:
        raise ModelError(f"--max-batch must be at least 1, got {max_batch}")
    if queue_delay_us < 0:
        raise ModelError(f"--queue-delay-us must be >= 0, got {queue_delay_us}")
    check_port(address, grpc_port, "--grpc-port")
    check_port(address, http_port, "--http-port")
    try:
        from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
        from pytriton.triton import DEFAULT_PROTECTED_ENDPOINTS, Triton, TritonConfig, TritonSecurityConfig
    except ImportError:
        raise ModelError(PYTRITON_MISSING) from None
    from engines import create_runner

    contracts = [load_contract(m) for m in models]
    runners = [create_runner(c.name, backend=backend, device=device, threads=threads) for c in contracts]
    os.environ.update(interpreter_library_env())   # inherited by tritonserver and its backend stubs
    config = TritonConfig(grpc_port=grpc_port, http_port=http_port, grpc_address=address,
                          http_address=address, allow_metrics=False, exit_on_error=True, log_file=log_file)
    # Statistics stay readable: they say which batch sizes the dynamic batcher formed.
    security = TritonSecurityConfig(restricted_endpoints=[e for e in DEFAULT_PROTECTED_ENDPOINTS
                                                          if e != "statistics"])
    triton = Triton(config=config, security_config=security)
    try:
        for contract, runner in zip(contracts, runners):
            triton.bind(
                model_name=contract.name, infer_func=make_infer(runner, contract),
                inputs=[Tensor(name=s.name, dtype=np.float32, shape=wire_dims(s)) for s in contract.inputs],
                outputs=[Tensor(name=s.name, dtype=np.float32, shape=wire_dims(s)) for s in contract.outputs],
                config=ModelConfig(max_batch_size=max_batch,
                                   batcher=DynamicBatcher(max_queue_delay_microseconds=queue_delay_us)),
                strict=True)
        triton.run()
    except BaseException:
        triton.stop()
        for r in runners:
            r.close()
        raise
    return triton, runners


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _terminate(signum, frame):
    raise KeyboardInterrupt   # PyTriton's serve loop stops the server on it


def main(argv=None) -> int:
    ap = _OneLineParser(prog="python -m engines.serve", description=__doc__.split("\n\n")[0])
    ap.add_argument("--grpc-port", type=int, default=8001)
    ap.add_argument("--http-port", type=int, default=8000)
    ap.add_argument("--address", default="0.0.0.0", help="interface to listen on (127.0.0.1: this machine only)")
    ap.add_argument("--backend", default="onnxruntime", choices=("auto", "onnxruntime", "tensorrt", "torch"),
                    help="the runner that executes the models inside the server")
    ap.add_argument("--device", help="cpu, cuda, cuda:N (default: the backend's best)")
    ap.add_argument("--threads", type=int, help="CPU threads per model (ONNX Runtime)")
    ap.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH, help="faces per model call at most")
    ap.add_argument("--queue-delay-us", type=int, default=DEFAULT_QUEUE_DELAY_US,
                    help="dynamic batching: longest wait for more requests, microseconds")
    ap.add_argument("--verbose", action="store_true", help="PyTriton's and Triton's own logs")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR)
    if not args.verbose:
        for name in ("pytriton", "tritonclient"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    signal.signal(signal.SIGTERM, _terminate)
    triton = runners = None
    # Triton's own log (a table per start, a line per model load) goes to a file unless --verbose.
    log_file = None if args.verbose else Path(tempfile.mkdtemp(prefix="unmask-triton-")) / "tritonserver.log"
    try:
        triton, runners = start_server(args.grpc_port, args.http_port, backend=args.backend, device=args.device,
                                       threads=args.threads, max_batch=args.max_batch,
                                       queue_delay_us=args.queue_delay_us, address=args.address,
                                       log_file=log_file)
        print(f"engines.serve: ready: grpc://{args.address}:{args.grpc_port} http://{args.address}:{args.http_port} "
              f"models {', '.join(SHIPPED_MODELS)} ({runners[0].name} on {runners[0].device}, dynamic batching "
              f"up to {args.max_batch}, {args.queue_delay_us} us)", flush=True)
        triton.serve()           # returns when stopped (SIGTERM / Ctrl-C) or when the server died
        if not getattr(triton, "_stopped", True):
            print("error: the Triton server stopped unexpectedly", file=sys.stderr)
            return EXIT_FAILURE
        return 0
    except KeyboardInterrupt:
        return 0
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as e:  # noqa: BLE001 - PyTriton / Triton start-up failures: one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        where = f" (log: {log_file})" if log_file else ""
        print(f"error: the Triton server did not start: {type(e).__name__}: {first}{where}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        if triton is not None:
            try:
                triton.stop()
            except Exception:  # noqa: BLE001
                pass
        for r in runners or ():
            r.close()


if __name__ == "__main__":
    sys.exit(main())
