"""Tests of adapters/scrbench_setup.py: `adapter check`, `adapter new` (+ the contract on the
scaffold) and setup.yaml parsing. Standard library only; nothing is downloaded or installed."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
ADAPTERS = HERE.parent
SETUP = ADAPTERS / "scrbench_setup.py"
sys.path.insert(0, str(ADAPTERS))

from scrbench_setup import read_setup, requirement_pins  # noqa: E402


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SETUP), *args], text=True, capture_output=True,
                          env=env, timeout=120)


class CheckTest(unittest.TestCase):
    def test_check_psr_names_what_is_missing(self):
        with tempfile.TemporaryDirectory() as tmp:
            env = {k: v for k, v in os.environ.items()
                   if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_TOKEN_PATH")}
            env["HF_HOME"] = str(Path(tmp) / "hf")
            env["PATH"] = "/usr/bin:/bin"  # no nvidia-smi, whatever the machine has
            done = run("check", "psr", "--cache", str(Path(tmp) / "cache"), env=env)
            self.assertEqual(done.returncode, 1, done.stdout + done.stderr)
            out = done.stdout
            self.assertIn("FLUX.1-dev, text only, as run in the paper (not PSR)", out)
            self.assertIn("ok       repository: none needed", out)
            self.assertIn(f"MISSING  venv: no venv at {Path(tmp) / 'cache/adapters/psr/venv'}", out)
            self.assertIn("MISSING  weights black-forest-labs/FLUX.1-dev@3de623fc3c33: not in the HF cache", out)
            self.assertIn("MISSING  token: no Hugging Face token", out)
            self.assertIn("MISSING  gpu: no GPU visible", out)
            self.assertIn("real run: not ready", out)
            self.assertIn("to fix: cargo xtask adapter setup psr (with HF_TOKEN set", out)

    def test_check_mosaic_names_the_repository_and_sees_cached_weights(self):
        with tempfile.TemporaryDirectory() as tmp:
            hub = Path(tmp) / "hf" / "hub"
            lora = hub / "models--ByteDance-FanQie--MOSAIC"
            (lora / "refs").mkdir(parents=True)
            (lora / "refs" / "main").write_text("a" * 40)
            (lora / "snapshots" / ("a" * 40)).mkdir(parents=True)
            (lora / "snapshots" / ("a" * 40) / "subject_512.safetensors").write_bytes(b"x")
            env = dict(os.environ, HF_HOME=str(Path(tmp) / "hf"), HF_TOKEN="set-for-the-test")
            env.pop("HF_HUB_CACHE", None)
            done = run("check", "mosaic", "--cache", str(Path(tmp) / "cache"), env=env)
            out = done.stdout
            self.assertIn("MISSING  repository: https://github.com/bytedance-fanqie-ai/MOSAIC not cloned", out)
            self.assertIn("ok       weights ByteDance-FanQie/MOSAIC@main:", out)
            self.assertIn("ok       token: from env HF_TOKEN", out)
            smoke = run("check", "mosaic", "--smoke", "--cache", str(Path(tmp) / "cache"), env=env)
            self.assertIn("to fix: cargo xtask adapter setup mosaic --smoke", smoke.stdout)

    def test_unknown_adapter(self):
        done = run("check", "no-such-adapter")
        self.assertNotEqual(done.returncode, 0)
        self.assertIn("no adapter 'no-such-adapter'", done.stderr)


class NewTest(unittest.TestCase):
    def test_new_scaffolds_an_adapter_that_passes_the_contract(self):
        with tempfile.TemporaryDirectory() as tmp:
            done = run("new", "acme-1", "--dir", tmp)
            self.assertEqual(done.returncode, 0, done.stderr)
            folder = Path(tmp) / "acme-1"
            for name in ("adapter.yaml", "worker.py", "setup.yaml", "requirements.txt", "README.md"):
                self.assertTrue((folder / name).is_file(), name)
            self.assertTrue((Path(tmp) / "scrbench_worker.py").is_file())
            contract = subprocess.run(
                [sys.executable, str(ADAPTERS / "scrbench_contract.py"), str(folder), "--python", sys.executable,
                 "--repeat", "--seeds", "1,2,3"], text=True, capture_output=True, timeout=120)
            self.assertEqual(contract.returncode, 0, contract.stdout + contract.stderr)
            self.assertIn("3 distinct images for 3 seeds", contract.stdout)
            smoke = run("smoke", "acme-1", "--dir", tmp)
            self.assertEqual(smoke.returncode, 0, smoke.stdout + smoke.stderr)
            self.assertNotEqual(run("new", "acme-1", "--dir", tmp).returncode, 0)
            self.assertNotEqual(run("new", "Acme 1", "--dir", tmp).returncode, 0)


class SetupFileTest(unittest.TestCase):
    def test_every_setup_yaml_reads(self):
        for path in sorted(ADAPTERS.glob("*/setup.yaml")):
            with self.subTest(adapter=path.parent.name):
                setup = read_setup(path)
                self.assertIn("python", setup)
                for weight in setup.get("weights") or []:
                    self.assertIsInstance(weight, dict)
                    self.assertIn("repo", weight)
                repository = setup.get("repository")
                if repository:
                    self.assertRegex(str(repository["commit"]), r"^[0-9a-f]{40}$")
                requirements = path.parent / str(setup.get("requirements", "requirements.txt"))
                self.assertTrue(requirements.is_file(), requirements)
                if path.parent.name in ("psr", "mosaic", "xverse", "xverse-paper"):
                    self.assertTrue(requirement_pins(requirements))


if __name__ == "__main__":
    unittest.main()
