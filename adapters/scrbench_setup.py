"""`cargo xtask adapter setup|check|new|smoke NAME`: prepares, inspects, scaffolds and smoke-tests
an adapter. Standard library only (the adapter's own packages live in its virtual environment).

    setup NAME [--smoke] [--no-weights] [--cache DIR] [--python PY] [--repo-from DIR]
        1. clones the official repository at the pinned commit into <cache>/adapters/NAME/src
           (--repo-from: from a local clone or mirror instead of the network);
        2. creates <cache>/adapters/NAME/venv and installs the adapter's requirements.txt;
        3. downloads the weights into the Hugging Face cache with huggingface_hub
           (skipped with --smoke or --no-weights: smoke mode needs none).
        Each step checks what is there first, so setup is idempotent and resumes after a failure.
    check NAME [--smoke] [--cache DIR] [--dir ADAPTERS]
        what a run needs and whether it is there (repository at the pinned commit, venv, packages
        at their pins, weights in the HF cache, HF token, a GPU); no network, no GPU needed.
        Exit status 0 when everything (for --smoke: everything smoke mode needs) is present.
    new NAME [--dir DIR]
        scaffolds DIR/NAME (default adapters/NAME): manifest, worker.py, setup.yaml,
        requirements.txt, README.md; the worker passes the protocol contract as it is.
    smoke NAME [--cache DIR] [--dir ADAPTERS] [--python PY] [-- CONTRACT-ARGS]
        runs scrbench_contract.py on the adapter in smoke mode with its interpreter.

An adapter's setup is described by `adapters/NAME/setup.yaml` (see adapters/README.md).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from scrbench_worker import _flow, _scalar, read_manifest  # noqa: E402

REPO_ROOT = HERE.parent


# --- setup.yaml --------------------------------------------------------------------------------


def read_setup(path: Path) -> dict:
    """`setup.yaml`: top-level `key: value` lines (scalars and flow collections) and block lists of
    flow values (`weights:` followed by `  - {repo: …}` lines)."""
    entries: dict = {}
    current: str | None = None
    if not path.is_file():
        return entries
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if line[0] in " \t":
            if current is None or not stripped.startswith("- "):
                raise ValueError(f"{path}:{number}: expected '  - item' under a key")
            item = stripped[2:].strip()
            value = _flow(item)[0] if item[:1] in "[{" else _scalar(item)
            entries.setdefault(current, []).append(value)
            continue
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if " #" in value and value[:1] not in "[{\"'":
            value = value[: value.index(" #")].strip()
        if not value:
            current = key
            entries[key] = []
            continue
        current = None
        entries[key] = _flow(value)[0] if value[0] in "[{" else _scalar(value)
    return entries


class Adapter:
    def __init__(self, name: str, cache: Path, adapters: Path = HERE):
        self.name = name
        self.folder = adapters / name
        if not (self.folder / "adapter.yaml").is_file():
            known = sorted(p.parent.name for p in adapters.glob("*/adapter.yaml") if p.parent.name != "tests")
            raise SystemExit(f"error: no adapter {name!r} (no {self.folder / 'adapter.yaml'}); adapters: {', '.join(known)}")
        self.manifest = read_manifest(self.folder / "adapter.yaml")
        self.setup = read_setup(self.folder / "setup.yaml")
        self.home = cache / "adapters" / name
        # `same_as: other`: this adapter runs in the other's clone and venv (linked, not copied).
        self.same_as = self.setup.get("same_as") or None
        shared = cache / "adapters" / self.same_as if self.same_as else self.home
        self.src = shared / "src"
        self.venv = shared / "venv"
        self.python = self.venv / "bin" / "python"
        self.repository = self.setup.get("repository") or None
        self.weights = [w for w in self.setup.get("weights") or [] if isinstance(w, dict)]
        requirements = self.setup.get("requirements", "requirements.txt")
        self.requirements = self.folder / requirements if requirements else None


def hf_hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(os.environ["HUGGINGFACE_HUB_CACHE"])
    return hf_home() / "hub"


def hf_home() -> Path:
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "huggingface"


def token_source() -> str | None:
    """Where a Hugging Face token would come from (its value is never read), or None."""
    for variable in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        if os.environ.get(variable):
            return f"env {variable}"
    path = Path(os.environ["HF_TOKEN_PATH"]) if os.environ.get("HF_TOKEN_PATH") else hf_home() / "token"
    if path.is_file() and path.stat().st_size > 0:
        return str(path)
    return None


GATED_HELP = (
    "{repo} is gated. With a Hugging Face account: open https://huggingface.co/{repo}, accept its "
    "licence (FLUX.1-dev: non-commercial), create a read token at "
    "https://huggingface.co/settings/tokens, then `export HF_TOKEN=hf_…` (or `huggingface-cli login`, "
    "which stores it in $HF_HOME/token) and run setup again; completed files are kept."
)


def requirement_pins(path: Path | None) -> list[tuple[str, str]]:
    pins = []
    if path is None or not path.is_file():
        return pins
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, _, version = line.partition("==")
            pins.append((name.strip(), version.strip()))
    return pins


def weight_label(weight: dict) -> str:
    revision = str(weight.get("revision") or "main")
    return f"{weight['repo']}@{revision[:12]}"


def snapshot_dir(weight: dict) -> tuple[Path | None, str]:
    """The weights' snapshot folder in the HF cache, or None with the reason."""
    repo = weight["repo"]
    folder = hf_hub_cache() / ("models--" + repo.replace("/", "--"))
    revision = str(weight.get("revision") or "main")
    if not folder.is_dir():
        return None, f"not in the HF cache ({hf_hub_cache()})"
    if re.fullmatch(r"[0-9a-f]{40}", revision):
        sha = revision
    else:
        ref = folder / "refs" / revision
        if not ref.is_file():
            return None, f"revision {revision} not in the HF cache ({folder})"
        sha = ref.read_text().strip()
    snapshot = folder / "snapshots" / sha
    if not snapshot.is_dir():
        return None, f"snapshot {sha[:12]} not in the HF cache ({folder})"
    return snapshot, sha


def weights_missing(weight: dict) -> tuple[list[str], Path | None]:
    """What is missing of one weights entry (empty: complete), and its snapshot."""
    snapshot, why = snapshot_dir(weight)
    if snapshot is None:
        return [why], None
    missing = []
    for name in list(weight.get("files") or []) + list(weight.get("expect") or []):
        if not (snapshot / name).exists():
            missing.append(name)
    for index in snapshot.rglob("*.safetensors.index.json"):
        try:
            shards = set(json.loads(index.read_text()).get("weight_map", {}).values())
        except (OSError, ValueError):
            missing.append(f"{index.relative_to(snapshot)} (unreadable)")
            continue
        missing.extend(str((index.parent / s).relative_to(snapshot)) for s in sorted(shards) if not (index.parent / s).exists())
    blobs = snapshot.parent.parent / "blobs"
    if blobs.is_dir() and any(p.suffix == ".incomplete" for p in blobs.iterdir()):
        missing.append("unfinished downloads (*.incomplete): run setup again to resume")
    return missing, snapshot


def git(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, check=check, text=True, capture_output=True)


def repo_state(adapter: Adapter) -> tuple[bool, str]:
    repository = adapter.repository
    if not repository:
        return True, "none needed"
    commit = str(repository["commit"])
    if not (adapter.src / ".git").exists():
        return False, f"{repository['url']} not cloned at {adapter.src}"
    head = git("rev-parse", "HEAD", cwd=adapter.src, check=False)
    if head.returncode != 0:
        return False, f"{adapter.src} has no checkout (an interrupted clone: setup resumes it)"
    sha = head.stdout.strip()
    if not sha.startswith(commit) and not commit.startswith(sha):
        return False, f"{adapter.src} is at {sha[:12]}, not the pinned {commit[:12]} (setup checks it out)"
    dirty = git("status", "--porcelain", "--untracked-files=no", cwd=adapter.src, check=False).stdout.strip()
    return True, f"{adapter.src} at {commit[:12]}" + (" (with local changes)" if dirty else "")


def venv_packages(adapter: Adapter) -> tuple[bool, str]:
    pins = requirement_pins(adapter.requirements)
    if not adapter.python.exists():
        return False, "no venv"
    script = (
        "import json,sys\nfrom importlib import metadata\nout={}\n"
        "for n in json.loads(sys.argv[1]):\n"
        "    try: out[n]=metadata.version(n)\n"
        "    except metadata.PackageNotFoundError: out[n]=None\n"
        "print(json.dumps(out))"
    )
    run = subprocess.run([str(adapter.python), "-c", script, json.dumps([n for n, _ in pins])],
                         text=True, capture_output=True)
    if run.returncode != 0:
        return False, f"the venv's python does not run: {run.stderr.strip()[-300:]}"
    found = json.loads(run.stdout)
    wrong = []
    for name, version in pins:
        got = found.get(name)
        if got is None:
            wrong.append(f"{name} missing")
        elif got.split("+")[0] != version.split("+")[0]:
            wrong.append(f"{name} {got} (pinned {version})")
    if wrong:
        return False, ", ".join(wrong)
    return True, f"{len(pins)} pinned packages as in {adapter.requirements.name if adapter.requirements else '-'}"


def gpu_state() -> tuple[bool, str]:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False, "no GPU visible (nvidia-smi not found); a real run needs a CUDA GPU (smoke mode runs on CPU)"
    run = subprocess.run([smi, "-L"], text=True, capture_output=True)
    lines = [l for l in run.stdout.splitlines() if l.startswith("GPU")]
    if run.returncode != 0 or not lines:
        return False, f"no GPU visible (nvidia-smi -L: {(run.stderr or run.stdout).strip()[:200]})"
    return True, "; ".join(lines)


# --- check -------------------------------------------------------------------------------------


def check(adapter: Adapter, smoke: bool) -> int:
    label = adapter.manifest.get("label", "")
    print(f"{adapter.name} {adapter.manifest.get('version', '')} ({adapter.folder}): {label}")
    rows: list[tuple[bool, bool, str, str]] = []  # (ok, needed for smoke, what, detail)

    ok, detail = repo_state(adapter)
    rows.append((ok, True, "repository", detail))
    venv_ok = adapter.python.exists()
    rows.append((venv_ok, True, "venv", str(adapter.venv) if venv_ok else f"no venv at {adapter.venv}"))
    ok, detail = venv_packages(adapter) if venv_ok else (False, "no venv to check")
    rows.append((ok, True, "packages", detail))
    gated = any(w.get("gated") for w in adapter.weights)
    for weight in adapter.weights:
        missing, snapshot = weights_missing(weight)
        what = f"weights {weight_label(weight)}"
        if missing:
            rows.append((False, False, what, "; ".join(missing[:5]) + (" …" if len(missing) > 5 else "")))
        else:
            rows.append((True, False, what, str(snapshot)))
    if not adapter.weights:
        rows.append((True, False, "weights", "none needed"))
    source = token_source()
    if gated:
        rows.append((source is not None, False, "token",
                     f"from {source}" if source else "no Hugging Face token (HF_TOKEN or $HF_HOME/token): "
                     "needed to download gated weights, not to run from the cache"))
    ok, detail = gpu_state()
    rows.append((ok, False, "gpu", detail))

    weights_ok = all(ok for ok, _, what, _ in rows if what.startswith("weights"))
    missing_real = 0
    missing_smoke = 0
    for ok, for_smoke, what, detail in rows:
        if not ok:
            # The token only matters while gated weights are still to be downloaded.
            missing_real += what != "token" or not weights_ok
            missing_smoke += for_smoke
        tag = "ok" if ok else ("MISSING" if (for_smoke or not smoke) else "-")
        print(f"  {tag:<8} {what}: {detail}")
    real_ready = missing_real == 0
    smoke_ready = missing_smoke == 0
    print(f"  smoke run: {'ready' if smoke_ready else 'not ready'}; real run: {'ready' if real_ready else 'not ready'}")
    if not (smoke_ready if smoke else real_ready):
        hint = f"cargo xtask adapter setup {adapter.name}" + (" --smoke" if smoke else "")
        print(f"  to fix: {hint}" + ("" if smoke or not gated or source else " (with HF_TOKEN set: the weights are gated)"))
        return 1
    return 0


# --- setup -------------------------------------------------------------------------------------


def step(text: str) -> None:
    print(f"==> {text}", flush=True)


def run(command: list, **kwargs) -> None:
    print("    $ " + " ".join(str(c) for c in command), flush=True)
    done = subprocess.run([str(c) for c in command], **kwargs)
    if done.returncode != 0:
        raise SystemExit(f"error: `{' '.join(str(c) for c in command)}` failed with status {done.returncode}")


def setup_repository(adapter: Adapter, repo_from: str | None) -> None:
    repository = adapter.repository
    if not repository:
        step("repository: none needed")
        return
    commit = str(repository["commit"])
    ok, detail = repo_state(adapter)
    if ok:
        step(f"repository: {detail}")
        return
    step(f"repository: {repository['url']} at {commit[:12]} -> {adapter.src}")
    source = repo_from or repository["url"]
    if adapter.src.exists() and not (adapter.src / ".git").exists():
        if any(adapter.src.iterdir()):
            raise SystemExit(f"error: {adapter.src} exists and is not a git clone; remove it and run setup again")
        adapter.src.rmdir()
    if not adapter.src.exists():
        adapter.src.parent.mkdir(parents=True, exist_ok=True)
        run(["git", "clone", "--no-checkout", source, adapter.src])
    has_commit = git("cat-file", "-e", f"{commit}^{{commit}}", cwd=adapter.src, check=False).returncode == 0
    if not has_commit:
        run(["git", "-C", adapter.src, "fetch", source])
        if git("cat-file", "-e", f"{commit}^{{commit}}", cwd=adapter.src, check=False).returncode != 0:
            raise SystemExit(f"error: commit {commit} is not in {source}")
    run(["git", "-C", adapter.src, "checkout", "--quiet", "--detach", commit])


def setup_venv(adapter: Adapter, python: str | None) -> None:
    wanted = str(adapter.setup.get("python") or "3.11")
    if not adapter.python.exists():
        interpreter = python or shutil.which(f"python{wanted}") or shutil.which("python3") or sys.executable
        step(f"venv: {adapter.venv} with {interpreter}")
        adapter.venv.parent.mkdir(parents=True, exist_ok=True)
        run([interpreter, "-m", "venv", adapter.venv])
    version = subprocess.run([str(adapter.python), "-c", "import sys;print('%d.%d'%sys.version_info[:2])"],
                             text=True, capture_output=True).stdout.strip()
    if version != wanted:
        print(f"    warning: the venv has Python {version}; the official pins were made for {wanted}")
    ok, detail = venv_packages(adapter)
    if ok:
        step(f"packages: {detail}")
        return
    # Never pip-install into anything but this venv (a stray link could point at a system Python).
    prefix = subprocess.run([str(adapter.python), "-c", "import sys;print(sys.prefix != sys.base_prefix, sys.prefix)"],
                            text=True, capture_output=True).stdout.strip()
    is_venv, _, where = prefix.partition(" ")
    if is_venv != "True" or Path(where).resolve() != adapter.venv.resolve():
        raise SystemExit(f"error: {adapter.python} is not the venv {adapter.venv} (its prefix: {where or '?'}); "
                         f"remove {adapter.venv} and run setup again")
    step(f"packages: installing {adapter.requirements} ({detail})")
    run([adapter.python, "-m", "pip", "install", "--disable-pip-version-check", "-r", adapter.requirements])
    ok, detail = venv_packages(adapter)
    if not ok:
        raise SystemExit(f"error: after pip install, packages still differ from the pins: {detail}")


DOWNLOAD = r"""
import json, sys
from huggingface_hub import hf_hub_download, snapshot_download
w = json.loads(sys.argv[1])
try:
    if w.get("files"):
        for name in w["files"]:
            print(hf_hub_download(w["repo"], name, revision=w.get("revision")), flush=True)
    else:
        print(snapshot_download(w["repo"], revision=w.get("revision"), allow_patterns=w.get("allow")), flush=True)
except Exception as error:
    kind = type(error).__name__
    text = str(error).splitlines()[0] if str(error) else ""
    gated = kind in ("GatedRepoError",) or " 401 " in f" {text} " or " 403 " in f" {text} " or "gated" in text.lower()
    print(json.dumps({"error": f"{kind}: {text}", "gated": gated}), file=sys.stderr)
    sys.exit(3 if gated else 2)
"""


def setup_weights(adapter: Adapter) -> None:
    if not adapter.weights:
        step("weights: none needed")
        return
    for weight in adapter.weights:
        missing, snapshot = weights_missing(weight)
        if not missing:
            step(f"weights {weight_label(weight)}: present ({snapshot})")
            continue
        step(f"weights {weight_label(weight)}: downloading into {hf_hub_cache()} ({missing[0]})")
        if weight.get("gated") and token_source() is None:
            raise SystemExit("error: " + GATED_HELP.format(repo=weight["repo"]))
        done = subprocess.run([str(adapter.python), "-c", DOWNLOAD, json.dumps(weight)], text=True,
                              stderr=subprocess.PIPE)
        if done.returncode != 0:
            detail = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"status {done.returncode}"
            try:
                detail = json.loads(detail)["error"]
            except (ValueError, KeyError, TypeError):
                pass
            if done.returncode == 3:
                raise SystemExit(f"error: {detail}\n" + GATED_HELP.format(repo=weight["repo"]))
            raise SystemExit(f"error: downloading {weight['repo']} failed: {detail}\n"
                             "    (network? run setup again to resume; completed files are kept)")
        missing, snapshot = weights_missing(weight)
        if missing:
            raise SystemExit(f"error: {weight['repo']} downloaded but incomplete: {'; '.join(missing[:5])}")


def link_shared(adapter: Adapter) -> None:
    """<cache>/adapters/NAME/{src,venv} as links to the `same_as` adapter's, where scrbench and
    the worker look for them."""
    adapter.home.mkdir(parents=True, exist_ok=True)
    for name in ("src", "venv"):
        link = adapter.home / name
        target = Path("..") / adapter.same_as / name
        if link.is_symlink() and os.readlink(link) == str(target):
            continue
        if link.exists() or link.is_symlink():
            raise SystemExit(f"error: {link} exists; remove it to share {adapter.same_as}'s {name}")
        link.symlink_to(target)
    step(f"{adapter.home}/src and venv: links to {adapter.same_as}'s")


def setup(adapter: Adapter, args) -> int:
    print(f"setting up {adapter.name} in {adapter.home}")
    if adapter.same_as:
        print(f"(it shares the clone and venv of {adapter.same_as})")
    setup_repository(adapter, args.repo_from)
    setup_venv(adapter, args.python)
    if adapter.same_as:
        link_shared(adapter)
    if args.smoke or args.no_weights:
        step("weights: skipped (" + ("smoke mode needs none" if args.smoke else "--no-weights") + ")")
    else:
        setup_weights(adapter)
    print(f"done. Check with `cargo xtask adapter check {adapter.name}`"
          + (f"; smoke test with `cargo xtask adapter smoke {adapter.name}`" if args.smoke else ""))
    return 0


# --- smoke -------------------------------------------------------------------------------------


def smoke(adapter: Adapter, args, contract_args: list[str]) -> int:
    python = args.python or (str(adapter.python) if adapter.python.exists() else None)
    python = python or os.environ.get("SCRBENCH_PYTHON")
    require = os.environ.get("SCRBENCH_REQUIRE_SMOKE") == "1"
    problems = []
    if python is None:
        if adapter.requirements and requirement_pins(adapter.requirements):
            problems.append(f"no venv at {adapter.venv}")
        else:
            python = sys.executable  # a stdlib-only adapter
    ok, detail = repo_state(adapter)
    if not ok:
        problems.append(f"the official repository is missing: {detail}")
    if problems:
        print(f"SKIPPED smoke {adapter.name}: {'; '.join(problems)}. "
              f"Run `cargo xtask adapter setup {adapter.name} --smoke` first"
              + (" (with --repo-from DIR for a local clone)" if adapter.repository else "") + ".")
        return 1 if require else 0
    env = dict(os.environ)
    if adapter.repository:
        env[f"SCRBENCH_{adapter.name.upper().replace('-', '_')}_SRC"] = str(adapter.src)
    command = [sys.executable, str(HERE / "scrbench_contract.py"), str(adapter.folder), "--python", python,
               "--repeat", *contract_args]
    return subprocess.run(command, env=env).returncode


# --- new ---------------------------------------------------------------------------------------

NEW_MANIFEST = '''\
# The manifest of the {name} adapter: scrbench reads it to start the worker and to build cache keys.
name: {name}
version: 0.1.0
label: "{name} (scaffold: a deterministic test pattern, not a model)"
description: "Scaffolded by `cargo xtask adapter new {name}`; replace worker.py's generate() with the model."
kind: generator
# plain: the prompt text and the references in subject order; placeholders: ENT1..ENTn in the text
# with captions and idip flags (add `idip: paper-all` or `people-only`); text-only: no references.
prompt_format: {{kind: plain}}
# The model's identity: part of every cache key (change the revision and the images are redone).
model: {{id: scaffold/{name}, revision: "0"}}
defaults: {{width: 512, height: 512, steps: 28, guidance: 3.5}}
command: ["{{python}}", "worker.py"]
smoke_args: ["--smoke"]
max_in_flight: 2
timeouts: {{startup_s: 900, request_s: 900}}
'''

NEW_SETUP = '''\
# How `cargo xtask adapter setup {name}` prepares a real run (adapters/scrbench_setup.py reads it).
python: "3.11"
requirements: requirements.txt
# The official code, cloned into <cache>/adapters/{name}/src at this commit, e.g.
# repository: {{url: "https://github.com/ORG/REPO", commit: 0123456789abcdef0123456789abcdef01234567}}
repository: null
# Weights downloaded into the Hugging Face cache with huggingface_hub, e.g.
#   - {{repo: ORG/MODEL, revision: <commit sha>, gated: false, allow: ["*.json", "*.safetensors"]}}
#   - {{repo: ORG/LORA, revision: main, files: [lora.safetensors]}}
weights:
'''

NEW_REQUIREMENTS = '''\
# The {name} adapter's Python packages, pinned (name==version), installed into its venv by
# `cargo xtask adapter setup {name}`. The scaffold's worker needs none (standard library only).
'''

NEW_WORKER = '''\
"""The {name} adapter's worker (scaffolded by `cargo xtask adapter new {name}`).

It speaks the scrbench worker protocol through scrbench_worker.py. Replace `load()` and
`generate()` with the model: load it once in `load()`, write one PNG per request in `generate()`.
As scaffolded it draws a deterministic test pattern from the seed (standard library only), so the
adapter passes the protocol contract and runs through the pipeline before any model exists.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scrbench_worker import Worker, main, write_png  # noqa: E402


class {cls}(Worker):
    """{name}"""

    def load(self):
        # Load the model here, once: real weights, or tiny random components when self.smoke.
        self.device = "cpu (standard library)"
        return dict(self.manifest.get("model") or {{}})

    def generate(self, request):
        width, height = int(request["width"]), int(request["height"])
        references = request.get("references") or []
        for reference in references:
            if not Path(reference["path"]).is_file():
                raise FileNotFoundError(f"reference {{reference['name']!r}}: no file at {{reference['path']}}")
        rng = random.Random(f"{{request['seed']}}/{{request['prompt']}}")
        background = [rng.randrange(256) for _ in range(3)]
        pixels = bytearray(bytes(background) * (width * height))
        # One rectangle per subject, in a colour drawn from the seed.
        for i in range(max(1, len(references))):
            colour = bytes(rng.randrange(256) for _ in range(3))
            x0, y0 = rng.randrange(width // 2 + 1), rng.randrange(height // 2 + 1)
            x1, y1 = min(width, x0 + width // 3 + 1), min(height, y0 + height // 3 + 1)
            for y in range(y0, y1):
                pixels[(y * width + x0) * 3 : (y * width + x1) * 3] = colour * (x1 - x0)
            self.progress(i + 1, max(1, len(references)))
        write_png(request["output"], width, height, bytes(pixels))
        return {{"device": self.device}}


if __name__ == "__main__":
    main({cls})
'''

NEW_README = '''\
# {name}

Scaffolded by `cargo xtask adapter new {name}` (see docs/adding-a-model.md). As it stands the
worker draws a deterministic test pattern per seed; replace `load()` and `generate()` in
`worker.py` with the model, fill in `setup.yaml` and `requirements.txt`, and give the manifest an
honest `label` and the model's `id` and `revision`.

- `adapter.yaml`: the manifest (name, label, prompt format, model identity, defaults, command).
- `worker.py`: the worker, on `../scrbench_worker.py` (the protocol loop).
- `setup.yaml`, `requirements.txt`: what `cargo xtask adapter setup {name}` installs.

Check it: `cargo xtask adapter smoke {name}` (the protocol contract, smoke mode), then add
`{name}: {{adapter: worker, dir: adapters/{name}, smoke: true}}` to a study's `models` and run
`cargo xtask run --model {name}`.
'''


def new(name: str, parent: Path) -> int:
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,62}", name):
        raise SystemExit(f"error: adapter name {name!r}: use lower-case letters, digits, '-' and '_'")
    folder = parent / name
    if folder.exists():
        raise SystemExit(f"error: {folder} already exists")
    folder.mkdir(parents=True)
    cls = "".join(part.capitalize() for part in re.split(r"[-_]", name) if part) + "Worker"
    if cls[0].isdigit():
        cls = "Adapter" + cls
    files = {
        "adapter.yaml": NEW_MANIFEST, "setup.yaml": NEW_SETUP, "requirements.txt": NEW_REQUIREMENTS,
        "worker.py": NEW_WORKER, "README.md": NEW_README,
    }
    for file, template in files.items():
        (folder / file).write_text(template.format(name=name, cls=cls), encoding="utf-8")
    helper = parent / "scrbench_worker.py"
    if not helper.exists():
        shutil.copy(HERE / "scrbench_worker.py", helper)
        print(f"copied scrbench_worker.py into {parent} (the worker imports it from its parent folder)")
    print(f"created {folder}: {', '.join(files)}")
    print(f"next: edit {folder / 'worker.py'}, then `cargo xtask adapter smoke {name}`")
    return 0


# --- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    contract_args: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, contract_args = argv[:at], argv[at + 1 :]
    parser = argparse.ArgumentParser(prog="cargo xtask adapter", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("setup", "clone, venv, weights"), ("check", "what is present and missing"),
                            ("smoke", "the protocol contract in smoke mode"), ("new", "scaffold an adapter")):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("name")
        if name == "new":
            sub.add_argument("--dir", type=Path, default=HERE, help="parent folder (default: adapters/)")
            continue
        sub.add_argument("--cache", type=Path, default=REPO_ROOT / "cache",
                         help="the store whose adapters/NAME/ holds src and venv (default: cache/)")
        sub.add_argument("--dir", type=Path, default=HERE, help="the adapters' folder (default: adapters/)")
        if name in ("setup", "check"):
            sub.add_argument("--smoke", action="store_true", help="only what smoke mode needs (no weights)")
        if name in ("setup", "smoke"):
            sub.add_argument("--python", default=None, help="interpreter (setup: for the venv; smoke: to run the worker)")
        if name == "setup":
            sub.add_argument("--no-weights", action="store_true")
            sub.add_argument("--repo-from", default=None, help="clone from this local repository or mirror")
    args = parser.parse_args(argv)
    if args.command == "new":
        return new(args.name, args.dir.resolve())
    adapter = Adapter(args.name, args.cache.resolve(), args.dir.resolve())
    if args.command == "check":
        return check(adapter, args.smoke)
    if args.command == "setup":
        return setup(adapter, args)
    return smoke(adapter, args, contract_args)


if __name__ == "__main__":
    sys.exit(main())
