"""A test worker for adapters/tests: draws a flat colour from the seed, and misbehaves on demand.

Prompts that change its behaviour: "raise" (the request fails), "fatal" (the worker exits 1),
"noisy" (prints to stdout through Python and through the file descriptor), "progress" (sends
progress lines), "slow" and "slower" (sleep 0.3 s and 2 s). `--fail-load` makes `load()` raise.
"""

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scrbench_worker import FatalError, Worker, main, write_png  # noqa: E402


class EchoWorker(Worker):
    heartbeat_s = 0.1

    @classmethod
    def add_arguments(cls, parser):
        parser.add_argument("--fail-load", action="store_true")

    def load(self):
        print("loading: this print must not reach the protocol channel")
        if self.args.fail_load:
            raise RuntimeError("no weights here")
        self.device = "cpu (test)"
        return {"id": "test/echo", "revision": "0"}

    def generate(self, request):
        prompt = request["prompt"]
        if prompt == "raise":
            raise ValueError("cannot draw this\nsecond line")
        if prompt == "fatal":
            raise FatalError("device lost")
        if prompt == "noisy":
            print("noise from python")
            os.write(1, b"noise from the file descriptor\n")
        if prompt == "progress":
            for step in range(1, 4):
                self.progress(step, 3)
        if prompt == "slow":
            time.sleep(0.3)
        if prompt == "slower":
            time.sleep(2.0)
        seed = int(request["seed"])
        width, height = int(request["width"]), int(request["height"])
        colour = bytes([seed % 256, (seed * 7) % 256, (seed * 13) % 256])
        write_png(request["output"], width, height, colour * (width * height))
        return {"device": self.device}


if __name__ == "__main__":
    main(EchoWorker)
