"""Checks an adapter's worker against the scrbench worker protocol (adapters/PROTOCOL.md).

Standard library only. Starts the worker the way scrbench does (the manifest's `command`, in the
adapter's folder, with `smoke_args` unless `--real`), then:

1. waits for `hello` (protocol 1, the manifest's name, the smoke flag asked for, capabilities);
2. sends `--seeds` generate requests at once (pipelined), each with its own output file, and checks
   that every `result` comes back in order with its id, ok, and a PNG of the requested size;
3. checks that different seeds gave different images and, with `--repeat`, that a second request
   with the first seed gives the same bytes (determinism);
4. sends a request whose reference cannot be read when the adapter takes references, expecting
   `ok: false` and a worker that goes on;
5. sends `shutdown` and expects exit status 0 within 10 s.

    python3 adapters/scrbench_contract.py adapters/psr --python cache/adapters/psr/venv/bin/python

Prints one line per check and a closing `N passed, N failed`; exit status 0 when all passed.
`cargo xtask adapter smoke NAME` runs this with the adapter's interpreter.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scrbench_worker import read_manifest, write_png  # noqa: E402


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:33]
    if len(data) < 33 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError(f"{path} is not a PNG")
    return struct.unpack(">II", data[16:24])


class Session:
    def __init__(self, command: list[str], cwd: Path, env: dict, log_path: Path):
        self.log = open(log_path, "wb")
        self.process = subprocess.Popen(
            command, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.log, start_new_session=True,
        )
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def send(self, message: dict) -> None:
        self.process.stdin.write((json.dumps(message) + "\n").encode())
        self.process.stdin.flush()

    def receive(self, timeout: float, skip=("progress", "heartbeat")) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no message within {timeout:.0f} s")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise EOFError(f"the worker closed stdout (exit status {self.process.wait()})")
            message = json.loads(line)
            if not isinstance(message, dict) or "type" not in message:
                raise ValueError(f"not a protocol message: {line!r}")
            if message["type"] in skip:
                continue
            return message

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.log.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("adapter", type=Path, help="the adapter's folder (with adapter.yaml)")
    parser.add_argument("--python", default=os.environ.get("SCRBENCH_PYTHON") or sys.executable,
                        help="the adapter's interpreter ({python} in the command)")
    parser.add_argument("--real", action="store_true", help="without smoke_args: the real model")
    parser.add_argument("--size", type=int, default=None,
                        help="width and height to ask for (default: 64 in smoke mode, else the manifest's)")
    parser.add_argument("--steps", type=int, default=None, help="steps (default: 2 in smoke mode)")
    parser.add_argument("--seeds", default="42,43", help="seeds sent at once (pipelined)")
    parser.add_argument("--repeat", action="store_true", help="also check the first seed again gives the same bytes")
    parser.add_argument("--prompt", default="a cat and a dog on a sofa")
    parser.add_argument("--references", nargs="*", default=None, help="reference images (default: two made up)")
    parser.add_argument("--startup-timeout", type=float, default=None)
    parser.add_argument("--request-timeout", type=float, default=None)
    parser.add_argument("--keep", type=Path, default=None, help="copy the images and the log here")
    args = parser.parse_args(argv)

    folder = args.adapter.resolve()
    manifest_path = folder / "adapter.yaml"
    manifest = read_manifest(manifest_path)
    command = manifest.get("command") or ["{python}", "worker.py"]
    smoke_args = [] if args.real else (manifest.get("smoke_args") or ["--smoke"])
    defaults = manifest.get("defaults") or {}
    timeouts = manifest.get("timeouts") or {}
    prompt_format = (manifest.get("prompt_format") or {}).get("kind", "plain")
    command = [part.replace("{python}", args.python) for part in command] + smoke_args
    smoke = not args.real
    size = args.size or (64 if smoke else int(defaults.get("width", 512)))
    steps = args.steps or (2 if smoke else int(defaults.get("steps", 28)))
    startup_timeout = args.startup_timeout or float(timeouts.get("startup_s", 900))
    request_timeout = args.request_timeout or float(timeouts.get("request_s", 900))

    passed = failed = 0

    def check(ok: bool, what: str) -> bool:
        nonlocal passed, failed
        print(f"{'ok  ' if ok else 'FAIL'} {what}", flush=True)
        if ok:
            passed += 1
        else:
            failed += 1
        return ok

    work = Path(tempfile.mkdtemp(prefix="scrbench-contract-"))
    references = []
    names = ["cat", "dog"]
    if args.references:
        paths = [Path(p).resolve() for p in args.references]
    else:
        paths = []
        for i, colour in enumerate((b"\xc0\x40\x40", b"\x40\x40\xc0")):
            path = work / f"ref{i}.png"
            write_png(path, 32, 32, colour * (32 * 32))
            paths.append(path)
    for i, path in enumerate(paths):
        name = names[i] if i < len(names) else f"subject{i + 1}"
        references.append({"name": name, "caption": name, "idip": False, "path": str(path)})
    prompt = args.prompt
    if prompt_format == "placeholders":
        prompt = "ENT1 and ENT2 on a sofa" if len(references) >= 2 else "ENT1 on a sofa"

    env = dict(os.environ)
    print(f"adapter {manifest.get('name')} {manifest.get('version')} in {folder}")
    print(f"command: {' '.join(command)}")
    session = Session(command, folder, env, work / "worker.log")
    try:
        started = time.monotonic()
        try:
            hello = session.receive(startup_timeout)
        except Exception as error:  # noqa: BLE001
            check(False, f"hello: {error}")
            raise SystemExit
        check(hello.get("type") == "hello", f"hello received after {time.monotonic() - started:.1f} s")
        check(hello.get("protocol") == 1, f"protocol {hello.get('protocol')} is 1")
        check(hello.get("adapter") == manifest.get("name"),
              f"adapter name {hello.get('adapter')!r} is the manifest's {manifest.get('name')!r}")
        check(bool(hello.get("smoke")) == smoke, f"smoke {hello.get('smoke')} as asked ({smoke})")
        capabilities = hello.get("capabilities") or {}
        check("generate" in capabilities.get("requests", []), f"capabilities {capabilities}")
        print(f"     model {hello.get('model')}, device {hello.get('device')!r}")

        seeds = [int(s) for s in args.seeds.split(",") if s]
        if args.repeat:
            seeds.append(seeds[0])
        outputs = []
        sent = time.monotonic()
        for i, seed in enumerate(seeds):
            output = work / f"out{i}-{seed}.png"
            outputs.append(output)
            session.send({
                "type": "generate", "id": f"contract/{i}/{seed}", "prompt": prompt,
                "format": prompt_format, "references": references, "seed": seed,
                "width": size, "height": size, "steps": steps,
                "guidance": float(defaults.get("guidance", 3.5)), "output": str(output),
            })
        for i, seed in enumerate(seeds):
            try:
                result = session.receive(request_timeout)
            except Exception as error:  # noqa: BLE001
                check(False, f"result {i}: {error}")
                raise SystemExit
            ok = check(result.get("type") == "result" and result.get("id") == f"contract/{i}/{seed}",
                       f"result for contract/{i}/{seed} in order ({result.get('seconds')} s)")
            if ok and check(result.get("ok") is True, f"ok: {result.get('error', 'true')}"):
                try:
                    got = png_size(Path(result["file"]))
                    check(got == (size, size), f"PNG {got[0]}x{got[1]} as asked ({size}x{size})")
                except Exception as error:  # noqa: BLE001
                    check(False, f"output file: {error}")
        print(f"     {len(seeds)} images in {time.monotonic() - sent:.1f} s")
        images = [p.read_bytes() if p.is_file() else b"" for p in outputs]
        distinct = len(set(images[: len(set(seeds))]))
        check(distinct == len(set(seeds)), f"{distinct} distinct images for {len(set(seeds))} seeds")
        if args.repeat:
            check(images[0] == images[-1], f"seed {seeds[0]} twice gives the same bytes")

        if references:
            bad = [dict(references[0], path=str(work / "missing.png"))] + references[1:]
            session.send({
                "type": "generate", "id": "contract/missing-reference", "prompt": prompt,
                "format": prompt_format, "references": bad, "seed": seeds[0], "width": size,
                "height": size, "steps": steps, "guidance": 3.5, "output": str(work / "bad.png"),
            })
            result = session.receive(request_timeout)
            if result.get("ok") is False:
                check(bool(result.get("error")), f"unreadable reference answered ok: false ({result.get('error')})")
            else:
                check(result.get("id") == "contract/missing-reference",
                      "unreadable reference answered (this adapter does not read reference images)")

        session.send({"type": "shutdown"})
        try:
            status = session.process.wait(timeout=10)
            check(status == 0, f"exit status {status} after shutdown")
        except subprocess.TimeoutExpired:
            check(False, "no exit within 10 s of shutdown")
    except SystemExit:
        pass
    finally:
        session.close()
        log_text = (work / "worker.log").read_text(errors="replace")
        if failed:
            print("--- worker log (last 40 lines)")
            print("\n".join(log_text.splitlines()[-40:]))
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            for path in work.iterdir():
                shutil.copy(path, args.keep / path.name)
        shutil.rmtree(work, ignore_errors=True)
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
