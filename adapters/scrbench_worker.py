"""The worker side of the scrbench worker protocol, version 1 (adapters/PROTOCOL.md).

Standard library only. An adapter is a subclass of `Worker` that implements `load()` and
`generate(request)` (and `detect(request)` for a detector), run by `main(MyWorker)`:

    from scrbench_worker import Worker, main

    class MyWorker(Worker):
        def load(self):
            self.pipe = ...                     # load the model once
            return {"id": "org/model", "revision": "abc123"}   # the hello's `model`

        def generate(self, request):
            ...                                 # write a PNG of width x height to request["output"]
            return {"device": self.device}      # optional: the result's `info`

    if __name__ == "__main__":
        main(MyWorker)

What the helper does for the adapter:

- the protocol channel is the process's original stdout, kept on a duplicated file descriptor;
  file descriptor 1 and `sys.stdout` are pointed at stderr before `load()`, so `print`s and
  native libraries writing to stdout cannot corrupt the channel;
- `hello` (name and version from the adapter's `adapter.yaml`, model identity from `load()`,
  device, smoke flag, capabilities), sent once `load()` returned;
- a reader thread that queues requests as they arrive, so pipelined requests wait in the worker
  while the model works, answered in order with their ids;
- `result` with `ok: true`, the file and the seconds taken, or `ok: false` with the error when a
  request raised (the traceback goes to stderr; the worker goes on);
- `progress` and `heartbeat` helpers (`self.progress(step, steps)`), and a heartbeat every
  `heartbeat_s` seconds while a request runs;
- exit status 0 on `shutdown` or when stdin closes; 1 when `load()` fails (scrbench restarts it).

Command-line options every worker accepts: `--smoke` (tiny random components, CPU: the manifest's
`smoke_args`), `--device DEVICE` (default: cuda when torch sees one, else cpu, decided by the
adapter), `--manifest PATH` (default: `adapter.yaml` beside the adapter's script). Extra options an
adapter declares in `add_arguments(parser)` are in `self.args`.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import struct
import sys
import threading
import time
import traceback
import zlib
from pathlib import Path

PROTOCOL = 1

__all__ = [
    "PROTOCOL",
    "Channel",
    "FatalError",
    "Worker",
    "main",
    "read_manifest",
    "write_png",
    "log",
]


class FatalError(Exception):
    """Raised by an adapter when the worker cannot go on (a broken device, say): the worker
    exits with status 1 without answering, and scrbench restarts it and retries the request."""


def log(*parts: object) -> None:
    """A line on the worker's log (stderr), flushed."""
    print(*parts, file=sys.stderr, flush=True)


# --- the manifest ----------------------------------------------------------------------------


def _scalar(text: str) -> object:
    text = text.strip()
    if not text:
        return None
    if text[0] in "\"'":
        quote, i, out = text[0], 1, []
        while i < len(text):
            char = text[i]
            if quote == '"' and char == "\\" and i + 1 < len(text):
                out.append(text[i + 1])
                i += 2
                continue
            if char == quote:
                if quote == "'" and text[i + 1 : i + 2] == "'":
                    out.append("'")
                    i += 2
                    continue
                break
            out.append(char)
            i += 1
        return "".join(out)
    if " #" in text:
        text = text[: text.index(" #")].rstrip()
    if text in ("true", "false"):
        return text == "true"
    if text in ("null", "~"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _flow(text: str, pos: int = 0) -> tuple[object, int]:
    """Parses a YAML flow value (`{a: 1, b: [x, "y"]}`) of plain or quoted scalars from `pos`."""
    while pos < len(text) and text[pos] == " ":
        pos += 1
    if pos < len(text) and text[pos] in "[{":
        closing = "]" if text[pos] == "[" else "}"
        is_map = text[pos] == "{"
        items: list = []
        entries: dict = {}
        pos += 1
        while True:
            while pos < len(text) and text[pos] in " ,":
                pos += 1
            if pos >= len(text):
                raise ValueError(f"unclosed {text[0]!r} in {text!r}")
            if text[pos] == closing:
                return (entries if is_map else items), pos + 1
            if is_map:
                key, pos = _flow_scalar(text, pos, ":")
                if pos >= len(text) or text[pos] != ":":
                    raise ValueError(f"expected ':' after {key!r} in {text!r}")
                value, after = _flow(text, pos + 1)
                if after == pos + 1 and text[after : after + 1] not in (",", closing):
                    raise ValueError(f"unexpected {text[after : after + 1]!r} in {text!r}")
                entries[str(key)] = value
                pos = after
            else:
                value, after = _flow(text, pos)
                if after == pos:
                    raise ValueError(f"unexpected {text[pos]!r} in {text!r}")
                items.append(value)
                pos = after
    return _flow_scalar(text, pos, ",]}")


def _flow_scalar(text: str, pos: int, stops: str) -> tuple[object, int]:
    while pos < len(text) and text[pos] == " ":
        pos += 1
    if pos < len(text) and text[pos] in "\"'":
        quote, end = text[pos], pos + 1
        while end < len(text):
            if text[end] == "\\" and quote == '"':
                end += 2
                continue
            if text[end] == quote:
                if quote == "'" and text[end + 1 : end + 2] == "'":
                    end += 2
                    continue
                break
            end += 1
        return _scalar(text[pos : end + 1]), end + 1
    end = pos
    while end < len(text) and text[end] not in stops:
        end += 1
    return _scalar(text[pos:end]), end


def read_manifest(path: str | os.PathLike) -> dict:
    """The top-level entries of an `adapter.yaml` written on one line each: scalars, flow maps
    (`model: {id: x, revision: y}`) and flow lists (`command: ["{python}", "worker.py"]`).

    Only what a worker needs from its manifest; block maps and lists (indented lines) are
    skipped (scrbench reads the whole manifest with a real YAML parser)."""
    entries: dict = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line or line[0] in " \t#-" or ":" not in line:
            continue
        key, _, value = line.partition(":")
        value = value.strip()
        if not value or value[0] in "|>&*!":
            continue
        if value[0] in "[{":
            try:
                entries[key.strip()] = _flow(value)[0]
            except ValueError:
                continue
        else:
            entries[key.strip()] = _scalar(value)
    return entries


# --- PNG without dependencies ----------------------------------------------------------------


def write_png(path: str | os.PathLike, width: int, height: int, rgb: bytes) -> None:
    """Writes 8-bit RGB pixels (row-major, `width * height * 3` bytes) as a PNG."""
    if len(rgb) != width * height * 3:
        raise ValueError(f"expected {width * height * 3} bytes of RGB, got {len(rgb)}")
    stride = width * 3
    raw = b"".join(b"\x00" + rgb[y * stride : (y + 1) * stride] for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )
    Path(path).write_bytes(data)


# --- the channel -----------------------------------------------------------------------------


class Channel:
    """The protocol's stdout: one JSON object per line, written whole under a lock."""

    def __init__(self, stream):
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, message: dict) -> None:
        line = json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()

    @classmethod
    def take_stdout(cls) -> "Channel":
        """Keeps the process's stdout for the protocol and points fd 1 and `sys.stdout` at stderr."""
        sys.stdout.flush()
        fd = os.dup(1)
        os.dup2(2, 1)
        stream = os.fdopen(fd, "w", encoding="utf-8", newline="\n")
        sys.stdout = sys.stderr
        return cls(stream)


_EOF = object()


def _reader(stdin, inbox: "queue.Queue") -> None:
    """Queues every message from stdin; `_EOF` when it closes or after `shutdown`."""
    try:
        for raw in stdin:
            if isinstance(raw, bytes):
                raw = raw.decode("utf-8", errors="replace")
            line = raw.strip()
            if not line:
                continue
            try:
                message = json.loads(line)
            except ValueError as error:
                log(f"scrbench_worker: ignoring a line that is not JSON ({error}): {line[:200]}")
                continue
            if not isinstance(message, dict):
                log(f"scrbench_worker: ignoring a line that is not a JSON object: {line[:200]}")
                continue
            inbox.put(message)
            if message.get("type") == "shutdown":
                break
    except Exception:  # a broken stdin is the end of the session
        log(traceback.format_exc())
    inbox.put(_EOF)


# --- the worker ------------------------------------------------------------------------------


class Worker:
    """Base class of an adapter's worker. Override `load`, `generate` (and `detect`)."""

    #: The request kinds this worker serves (its `capabilities.requests`): those of the methods
    #: the subclass overrides, unless set.
    requests: list[str] | None = None
    #: How many requests scrbench may send ahead (`capabilities.max_in_flight`); the manifest's
    #: `max_in_flight` overrides it.
    max_in_flight: int = 2
    #: Seconds between heartbeats while a request runs (0: none).
    heartbeat_s: float = 30.0

    def __init__(self, args: argparse.Namespace, manifest: dict, channel: Channel | None = None):
        self.args = args
        self.manifest = manifest
        self.smoke: bool = bool(getattr(args, "smoke", False))
        self.device: str = getattr(args, "device", None) or ""
        self.name: str = str(manifest.get("name") or type(self).__name__)
        self.version: str = str(manifest.get("version") or "0.0.0")
        if manifest.get("max_in_flight") is not None:
            self.max_in_flight = int(manifest["max_in_flight"])
        self.channel = channel
        self.current: str | None = None

    # To implement --------------------------------------------------------------------------

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Adds adapter-specific command-line options (found in `self.args`)."""

    def load(self) -> dict:
        """Loads the model (once) and returns its identity for the hello (`id`, `revision`, …).
        Set `self.device` to a description of the device (e.g. "cuda:0 (NVIDIA H100)")."""
        return {}

    def generate(self, request: dict) -> dict | None:
        """Writes a PNG of exactly `request["width"]` x `request["height"]` to `request["output"]`;
        may return a dict, the result's `info`. Raise to answer `ok: false`."""
        raise NotImplementedError("this worker does not generate images")

    def detect(self, request: dict) -> list[dict]:
        """Returns the detections (`query`, `score`, `bbox` [x0, y0, x1, y1] in pixels)."""
        raise NotImplementedError("this worker does not detect")

    # Helpers for the adapter ---------------------------------------------------------------

    def progress(self, step: int, steps: int) -> None:
        """Tells scrbench how far the current request is (also a sign of life)."""
        if self.channel is not None and self.current is not None:
            self.channel.send({"type": "progress", "id": self.current, "step": int(step), "steps": int(steps)})

    def heartbeat(self) -> None:
        if self.channel is not None:
            self.channel.send({"type": "heartbeat"})

    # The loop ------------------------------------------------------------------------------

    def capabilities(self) -> dict:
        requests = self.requests
        if requests is None:
            requests = [
                kind
                for kind in ("generate", "detect")
                if getattr(type(self), kind) is not getattr(Worker, kind)
            ]
        return {"requests": list(requests), "max_in_flight": max(1, int(self.max_in_flight))}

    def hello(self, model: dict) -> dict:
        return {
            "type": "hello",
            "protocol": PROTOCOL,
            "adapter": self.name,
            "adapter_version": self.version,
            "model": model or {},
            "device": self.device,
            "smoke": self.smoke,
            "capabilities": self.capabilities(),
        }

    def handle(self, message: dict) -> dict:
        """Serves one request and returns its `result` (never raises but `FatalError`)."""
        kind = message.get("type")
        request_id = message.get("id")
        started = time.monotonic()
        self.current = request_id
        try:
            if kind == "generate":
                info = self.generate(message)
                result = {"type": "result", "id": request_id, "ok": True, "file": message.get("output")}
                if info:
                    result["info"] = info
            elif kind == "detect":
                detections = self.detect(message)
                result = {"type": "result", "id": request_id, "ok": True, "detections": list(detections)}
            else:
                raise ValueError(f"unknown request type {kind!r}")
        except FatalError:
            raise
        except BaseException as error:  # noqa: BLE001 - every failure of a request is its answer
            if isinstance(error, (KeyboardInterrupt, SystemExit)):
                raise
            log(f"request {request_id}: failed\n{traceback.format_exc()}")
            text = str(error).strip().splitlines()
            message_text = f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")
            return {"type": "result", "id": request_id, "ok": False, "error": message_text}
        finally:
            self.current = None
        result["seconds"] = round(time.monotonic() - started, 3)
        return result

    def serve(self, stdin) -> int:
        """Runs the protocol until `shutdown` or end of input; returns the exit status."""
        assert self.channel is not None
        inbox: queue.Queue = queue.Queue()
        threading.Thread(target=_reader, args=(stdin, inbox), name="scrbench-stdin", daemon=True).start()
        busy = threading.Event()
        stop = threading.Event()
        if self.heartbeat_s > 0:

            def beat() -> None:
                while not stop.wait(self.heartbeat_s):
                    if busy.is_set():
                        self.heartbeat()

            threading.Thread(target=beat, name="scrbench-heartbeat", daemon=True).start()
        try:
            while True:
                message = inbox.get()
                if message is _EOF or message.get("type") == "shutdown":
                    return 0
                if "id" not in message:
                    log(f"scrbench_worker: ignoring a message without id: {message}")
                    continue
                busy.set()
                try:
                    result = self.handle(message)
                except FatalError:
                    log(f"request {message.get('id')}: fatal\n{traceback.format_exc()}")
                    return 1
                finally:
                    busy.clear()
                self.channel.send(result)
        finally:
            stop.set()


def parser_for(worker_class: type[Worker]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(worker_class.__doc__ or "").strip().splitlines()[0] if worker_class.__doc__ else None)
    parser.add_argument("--smoke", action="store_true", help="tiny randomly initialised components on CPU")
    parser.add_argument("--device", default=None, help="torch device (default: the adapter decides)")
    parser.add_argument("--manifest", default=None, help="adapter.yaml (default: beside the script)")
    worker_class.add_arguments(parser)
    return parser


def main(worker_class: type[Worker], argv: list[str] | None = None) -> None:
    """Runs `worker_class` as a scrbench worker on this process's stdin/stdout; never returns."""
    channel = Channel.take_stdout()
    # scrbench controls the worker's life (shutdown, end of input, kill); a Ctrl-C meant for
    # scrbench must not kill a request half-way.
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except (ValueError, OSError):
        pass
    args = parser_for(worker_class).parse_args(argv)
    if args.manifest:
        manifest_path = Path(args.manifest)
    else:
        script = sys.modules[worker_class.__module__].__dict__.get("__file__") or sys.argv[0]
        manifest_path = Path(script).resolve().parent / "adapter.yaml"
    manifest = read_manifest(manifest_path) if manifest_path.is_file() else {}
    if not manifest:
        log(f"scrbench_worker: no manifest at {manifest_path}; name and version unknown")
    worker = worker_class(args, manifest, channel)
    try:
        started = time.monotonic()
        model = worker.load()
        log(f"{worker.name}: loaded in {time.monotonic() - started:.1f} s on {worker.device or '?'}"
            f"{' (smoke)' if worker.smoke else ''}")
    except BaseException:  # noqa: BLE001
        log(f"{worker.name}: load failed\n{traceback.format_exc()}")
        sys.stderr.flush()
        os._exit(1)
    channel.send(worker.hello(model))
    status = worker.serve(sys.stdin.buffer)
    sys.stderr.flush()
    # Daemon threads, CUDA contexts and library atexit hooks must not delay or change the exit.
    os._exit(status)
