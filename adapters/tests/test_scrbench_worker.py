"""Tests of adapters/scrbench_worker.py (standard library only).

    python3 -m unittest discover -s adapters/tests -t adapters

Each test starts `echo_worker.py` as scrbench would and talks the protocol to it.
"""

from __future__ import annotations

import json
import os
import queue
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import scrbench_worker  # noqa: E402
from scrbench_worker import read_manifest, write_png  # noqa: E402


def decode_png(data: bytes) -> tuple[int, int, bytes]:
    """Width, height and RGB bytes of an 8-bit RGB PNG without filters (what write_png writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, kind
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert (depth, colour) == (8, 2)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * 3
    rows = [raw[y * (stride + 1) : (y + 1) * (stride + 1)] for y in range(height)]
    assert all(row[0] == 0 for row in rows)
    return width, height, b"".join(row[1:] for row in rows)


class Worker:
    """echo_worker.py as a child process, spoken to over its stdin/stdout."""

    def __init__(self, *extra: str):
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "echo_worker.py"), *extra],
            cwd=HERE, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
        )
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def send(self, message: dict | str):
        text = message if isinstance(message, str) else json.dumps(message)
        self.process.stdin.write(text.encode() + b"\n")
        self.process.stdin.flush()

    def receive(self, timeout: float = 10.0):
        line = self.lines.get(timeout=timeout)
        return None if line is None else json.loads(line)

    def messages(self, timeout: float = 10.0) -> list:
        """Every message until stdout closes."""
        out = []
        while (message := self.receive(timeout)) is not None:
            out.append(message)
        return out

    def stderr(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def close(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.process.stdout.close()
        self.process.stdin.close()
        self.log.close()


class ProtocolTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self.tmp.name)

    def tearDown(self):
        self.tmp.cleanup()

    def start(self, *extra: str) -> Worker:
        worker = Worker(*extra)
        self.addCleanup(worker.close)
        return worker

    def request(self, request_id: str, prompt: str = "a cat", seed: int = 42, size=(6, 4)) -> dict:
        return {
            "type": "generate", "id": request_id, "prompt": prompt, "format": "plain",
            "references": [{"name": "cat", "caption": "cat", "idip": False, "path": "/nonexistent"}],
            "seed": seed, "width": size[0], "height": size[1], "steps": 2, "guidance": 3.5,
            "output": str(self.dir / f"{request_id.replace('/', '_')}.png"),
            "future_field": {"ignored": True},
        }

    def test_hello_names_the_manifest_and_capabilities(self):
        worker = self.start("--smoke")
        hello = worker.receive()
        self.assertEqual(hello["type"], "hello")
        self.assertEqual(hello["protocol"], 1)
        self.assertEqual(hello["adapter"], "echo")
        self.assertEqual(hello["adapter_version"], "0.3.1")
        self.assertEqual(hello["model"], {"id": "test/echo", "revision": "0"})
        self.assertEqual(hello["device"], "cpu (test)")
        self.assertIs(hello["smoke"], True)
        self.assertEqual(hello["capabilities"], {"requests": ["generate"], "max_in_flight": 3})
        worker.send({"type": "shutdown"})
        self.assertEqual(worker.messages(), [])
        self.assertEqual(worker.process.wait(timeout=10), 0)

    def test_pipelined_requests_are_answered_in_order_with_images(self):
        worker = self.start()
        self.assertIs(worker.receive()["smoke"], False)
        ids = [f"p{i:02}/{seed}" for i, seed in enumerate((42, 43, 44, 42))]
        for request_id in ids:
            worker.send(self.request(request_id, seed=int(request_id[-2:])))
        worker.send({"type": "shutdown"})
        results = worker.messages()
        self.assertEqual([r["id"] for r in results], ids)
        for result, request_id in zip(results, ids):
            self.assertEqual(result["type"], "result")
            self.assertIs(result["ok"], True, result)
            self.assertEqual(result["info"], {"device": "cpu (test)"})
            self.assertIsInstance(result["seconds"], float)
            width, height, rgb = decode_png(Path(result["file"]).read_bytes())
            self.assertEqual((width, height), (6, 4))
            seed = int(request_id[-2:])
            self.assertEqual(rgb[:3], bytes([seed % 256, seed * 7 % 256, seed * 13 % 256]))
        self.assertEqual(worker.process.wait(timeout=10), 0)

    def test_a_failed_request_answers_ok_false_and_the_worker_goes_on(self):
        worker = self.start()
        worker.receive()
        worker.send(self.request("bad", prompt="raise"))
        worker.send(self.request("good"))
        worker.send({"type": "detect", "id": "d", "image": "/x.png", "queries": ["cat"]})
        worker.send({"type": "transmogrify", "id": "t"})
        bad, good, detect, unknown = (worker.receive() for _ in range(4))
        self.assertEqual(bad, {"type": "result", "id": "bad", "ok": False,
                               "error": "ValueError: cannot draw this"})
        self.assertIs(good["ok"], True)
        self.assertIs(detect["ok"], False)
        self.assertIn("does not detect", detect["error"])
        self.assertIs(unknown["ok"], False)
        self.assertIn("unknown request type 'transmogrify'", unknown["error"])
        self.assertIn("Traceback", worker.stderr())
        self.assertIn("cannot draw this", worker.stderr())
        worker.process.stdin.close()  # end of input means shutdown too
        self.assertEqual(worker.messages(), [])
        self.assertEqual(worker.process.wait(timeout=10), 0)

    def test_prints_from_model_code_go_to_stderr(self):
        worker = self.start()
        worker.receive()
        worker.send(self.request("noisy", prompt="noisy"))
        worker.send({"type": "shutdown"})
        results = worker.messages()
        self.assertEqual([r["id"] for r in results], ["noisy"])
        self.assertEqual(worker.process.wait(timeout=10), 0)
        log = worker.stderr()
        for text in ("loading: this print", "noise from python", "noise from the file descriptor"):
            self.assertIn(text, log)

    def test_progress_lines_carry_the_request_id(self):
        worker = self.start()
        worker.receive()
        worker.send(self.request("p/1", prompt="progress"))
        worker.send({"type": "shutdown"})
        messages = worker.messages()
        progress = [m for m in messages if m["type"] == "progress"]
        self.assertEqual([(m["id"], m["step"], m["steps"]) for m in progress],
                         [("p/1", 1, 3), ("p/1", 2, 3), ("p/1", 3, 3)])
        self.assertEqual(messages[-1]["type"], "result")

    def test_heartbeats_while_a_request_runs(self):
        worker = self.start()
        worker.receive()
        worker.send(self.request("slow", prompt="slow"))
        worker.send({"type": "shutdown"})
        messages = worker.messages()
        self.assertGreaterEqual(sum(m["type"] == "heartbeat" for m in messages), 1, messages)
        self.assertEqual(messages[-1]["id"], "slow")

    def test_requests_queue_while_one_runs(self):
        worker = self.start()
        worker.receive()
        worker.send(self.request("slow", prompt="slower"))
        # While "slower" (2 s) runs, the reader thread takes everything sent: 1 MiB of requests goes
        # through the pipe (64 KiB) without waiting for the worker.
        padding = "x" * 4096
        for i in range(256):
            worker.send(dict(self.request(f"q{i}"), padding=padding))
        early = []
        while not worker.lines.empty():
            early.append(json.loads(worker.lines.get()))
        self.assertNotIn("result", [m["type"] for m in early], "stdin was not drained while busy")
        worker.send({"type": "shutdown"})
        results = [m["id"] for m in worker.messages() if m["type"] == "result"]
        self.assertEqual(results, ["slow"] + [f"q{i}" for i in range(256)])
        self.assertEqual(worker.process.wait(timeout=10), 0)

    def test_bad_input_lines_are_logged_and_skipped(self):
        worker = self.start()
        worker.receive()
        worker.send("this is not json")
        worker.send("[1, 2]")
        worker.send({"type": "generate", "prompt": "no id"})
        worker.send(self.request("after"))
        worker.send({"type": "shutdown"})
        self.assertEqual([m["id"] for m in worker.messages()], ["after"])
        self.assertIn("not JSON", worker.stderr())

    def test_a_failed_load_exits_1_without_hello(self):
        worker = self.start("--fail-load")
        self.assertEqual(worker.messages(), [])
        self.assertEqual(worker.process.wait(timeout=10), 1)
        self.assertIn("no weights here", worker.stderr())

    def test_a_fatal_error_exits_1_without_answering(self):
        worker = self.start()
        worker.receive()
        worker.send(self.request("f", prompt="fatal"))
        worker.send(self.request("never"))
        self.assertEqual(worker.messages(), [])
        self.assertEqual(worker.process.wait(timeout=10), 1)
        self.assertIn("device lost", worker.stderr())

    def test_sigint_does_not_kill_a_worker(self):
        worker = self.start()
        worker.receive()
        worker.process.send_signal(2)
        worker.send(self.request("after-sigint"))
        self.assertEqual(worker.receive()["id"], "after-sigint")


class HelpersTest(unittest.TestCase):
    def test_write_png_round_trips(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "x.png"
            rgb = bytes(range(256))[: 5 * 3 * 3] * 1
            rgb = (rgb * 2)[: 5 * 3 * 3]
            write_png(path, 5, 3, rgb)
            self.assertEqual(decode_png(path.read_bytes()), (5, 3, rgb))
            with self.assertRaises(ValueError):
                write_png(path, 5, 3, b"\x00")

    def test_read_manifest_takes_top_level_scalars(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "adapter.yaml"
            path.write_text(
                "# comment\nname: psr\nversion: 0.1.0\nlabel: \"FLUX.1-dev, text only: as run\"  # note\n"
                "max_in_flight: 2\nsmoke: true\nratio: 0.5\nnothing: null\n"
                "prompt_format: {kind: text-only}\ncommand: [\"{python}\", \"worker.py\"]\n"
                "defaults:\n  width: 768\n- stray\nquoted: 'it''s'\n",
                encoding="utf-8",
            )
            self.assertEqual(read_manifest(path), {
                "name": "psr", "version": "0.1.0", "label": "FLUX.1-dev, text only: as run",
                "max_in_flight": 2, "smoke": True, "ratio": 0.5, "nothing": None, "quoted": "it's",
                "prompt_format": {"kind": "text-only"}, "command": ["{python}", "worker.py"],
            })

    def test_read_manifest_takes_flow_maps_and_lists(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "adapter.yaml"
            path.write_text(
                "model: {id: black-forest-labs/FLUX.1-dev, revision: \"3de6\", lora: null}  # pinned\n"
                "defaults: {width: 768, height: 768, steps: 28, guidance: 3.5}\n"
                "command: [\"{python}\", worker.py, '--x, y']\n"
                "nested: {a: [1, {b: 'c'}], d: []}\nbroken: {a: [1}\n",
                encoding="utf-8",
            )
            self.assertEqual(read_manifest(path), {
                "model": {"id": "black-forest-labs/FLUX.1-dev", "revision": "3de6", "lora": None},
                "defaults": {"width": 768, "height": 768, "steps": 28, "guidance": 3.5},
                "command": ["{python}", "worker.py", "--x, y"],
                "nested": {"a": [1, {"b": "c"}], "d": []},
            })

    def test_every_adapter_manifest_has_a_name_and_version(self):
        for manifest in sorted(HERE.parent.glob("*/adapter.yaml")):
            entries = read_manifest(manifest)
            if manifest.parent.name == "tests":
                continue
            with self.subTest(adapter=manifest.parent.name):
                self.assertEqual(entries.get("name"), manifest.parent.name)
                self.assertTrue(entries.get("version"))
                self.assertTrue(entries.get("label"))

    def test_protocol_version(self):
        self.assertEqual(scrbench_worker.PROTOCOL, 1)


if __name__ == "__main__":
    unittest.main()
