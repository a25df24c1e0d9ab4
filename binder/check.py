"""Check the Binder files as far as this machine allows: ``python binder/check.py`` in the project's venv.

One line per check (ok / skip / FAIL); exits 1 on a failure. Downloads point at local mirrors: the
example images are served from ``$LRP_WIDGETS_IMAGES`` (default ``../shared/images``) by
``http.server``; no mirror can hold the real VGG16 weights (their hash is checked), so offline the
weights step must fail with the clear ``WeightsError`` message.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from lrp_widgets.examples import EXAMPLES, mirror

BINDER = Path(__file__).resolve().parent
ROOT = BINDER.parent
PYPI = "https://pypi.org/simple"
TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
TORCH = ("torch", "torchvision")
WEIGHTS_MESSAGE = "WeightsError: could not download the ImageNet weights"


class Fail(Exception):
    pass


class Skip(Exception):
    pass


@functools.cache
def reachable(url: str) -> bool:
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=10).close()
    except urllib.error.HTTPError:
        return True  # the server answered
    except OSError:
        return False
    return True


@functools.cache
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


@functools.cache
def requirements() -> tuple[dict[str, Version], list[str]]:
    """Pinned torch/torchvision versions and every other requirement line, each line checked."""
    pins, others, index = {}, [], None
    for number, raw in enumerate((BINDER / "requirements.txt").read_text().splitlines(), 1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("--extra-index-url "):
            index = line.split(None, 1)[1]
        elif line in ("-e .", "."):  # pip resolves "." against the working directory: repo2docker's is the repo
            others.append(line)
        else:
            try:
                requirement = Requirement(line)
            except InvalidRequirement as error:
                raise Fail(f"line {number} does not parse ({error})") from None
            specs = list(requirement.specifier)
            if requirement.name in TORCH:
                if len(specs) != 1 or specs[0].operator != "==" or Version(specs[0].version).local != "cpu":
                    raise Fail(f"line {number}: pin {requirement.name} to an exact '+cpu' version")
                pins[requirement.name] = Version(specs[0].version)
            else:
                others.append(line)
    if index != TORCH_INDEX or set(pins) != set(TORCH) or not {"-e .", "."} & set(others):
        raise Fail(f"needs --extra-index-url {TORCH_INDEX}, torch and torchvision '+cpu' pins and '-e .'")
    return pins, others


@functools.cache
def runtime() -> str:
    text = (BINDER / "runtime.txt").read_text().strip()
    match = re.fullmatch(r"python-(3\.\d+)(\.\d+)?", text)
    if not match:
        raise Fail(f"'{text}' is not 'python-3.X'")
    if match.group(1) not in SpecifierSet(pyproject()["requires-python"]):
        raise Fail(f"{text} does not satisfy requires-python {pyproject()['requires-python']}")
    return match.group(1)


@functools.cache
def pypi_report() -> dict[str, dict]:
    """Metadata of every requirement as PyPI alone resolves it for runtime.txt's Python (no dependencies)."""
    if not reachable(PYPI + "/pip/"):
        raise Skip(f"{PYPI} is not reachable here")
    pins, others = requirements()
    args = []
    for line in others:  # "." is the repository root
        args += ["-e", str(ROOT)] if line == "-e ." else [str(ROOT) if line == "." else line]
    deps = [d for d in pyproject()["dependencies"] if Requirement(d).name not in TORCH]
    public = [f"{name}=={pins[name].public}" for name in TORCH]  # the +cpu wheels mirror these releases
    # only PyPI: no local config, find-links, extra indexes or caps
    env = {k: v for k, v in os.environ.items() if k not in ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL",
                                                             "PIP_CONSTRAINT", "PIP_NO_INDEX")}
    env["PIP_CONFIG_FILE"] = os.devnull
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-deps",
                               "--quiet", "--python-version", runtime(), "--index-url", PYPI, "--report", str(report),
                               *args, *deps, *public], env=env, capture_output=True, text=True, timeout=300)
        if done.returncode:
            raise Fail(" ".join(line for line in done.stderr.splitlines() if line.startswith("ERROR"))[:300])
        installs = json.loads(report.read_text())["install"]
    return {item["metadata"]["name"].lower(): item["metadata"] for item in installs}


def check_requirements() -> str:
    """requirements.txt parses"""
    pins, others = requirements()
    return ", ".join([f"{name}=={version}" for name, version in pins.items()] + others) + f" (+ {TORCH_INDEX})"


def check_runtime() -> str:
    """runtime.txt"""
    return f"python-{runtime()}, within requires-python {pyproject()['requires-python']}"


def check_pypi() -> str:
    """non-torch requirements resolve on PyPI"""
    return ", ".join(f"{m['name']} {m['version']}" for name, m in pypi_report().items() if name not in TORCH)


def check_pins() -> str:
    """torch pins are the project's"""
    pins, _ = requirements()
    project = dict(re.findall(r'"(torch|torchvision)==([^"]+)"', (ROOT / "run").read_text()))
    for name, version in pins.items():
        if project.get(name) != version.public:
            raise Fail(f"{name}=={version} but ./run installs {name}=={project.get(name)}")
    declared = {Requirement(d).name: Requirement(d).specifier for d in pyproject()["dependencies"]}
    for name, version in pins.items():
        if not declared[name].contains(version.public):
            raise Fail(f"{name}=={version} outside pyproject's {name}{declared[name]}")
    detail = f"{', '.join(f'{n}=={v}' for n, v in pins.items())} match ./run and pyproject"
    with contextlib.suppress(Skip):
        needs = [Requirement(r) for r in pypi_report()["torchvision"].get("requires_dist", [])]
        torch = next(r for r in needs if r.name == "torch")
        if not torch.specifier.contains(pins["torch"].public):
            raise Fail(f"torchvision {pins['torchvision'].public} on PyPI needs torch{torch.specifier}")
        detail += f"; torchvision {pins['torchvision'].public} on PyPI needs torch{torch.specifier}: ok"
    return detail


def check_cpu_wheels() -> str:
    """+cpu wheels on the PyTorch index"""
    if not reachable(TORCH_INDEX + "/"):
        raise Skip(f"{TORCH_INDEX} is not reachable here; checked the pins against the project instead")
    pins, _ = requirements()
    tag = "cp" + runtime().replace(".", "")
    for name, version in pins.items():
        with urllib.request.urlopen(f"{TORCH_INDEX}/{name}/", timeout=30) as page:
            files = urllib.parse.unquote(page.read().decode())
        if not re.search(rf"{name}-{re.escape(str(version))}-{tag}-{tag}-\w*linux\w*x86_64\.whl", files):
            raise Fail(f"no {name}-{version} {tag} Linux wheel on {TORCH_INDEX}")
    return f"{tag} Linux wheels found for {', '.join(f'{n}=={v}' for n, v in pins.items())}"


def check_executable() -> str:
    """postBuild and start are executable"""
    for path in (BINDER / "postBuild", BINDER / "start"):
        if not os.access(path, os.X_OK) or not path.read_text().startswith("#!"):
            raise Fail(f"{path.name} needs a '#!' line and the executable bit (chmod +x binder/{path.name})")
    if not (BINDER / "start").read_text().rstrip().endswith('exec "$@"'):
        raise Fail("start must end with 'exec \"$@\"' (it runs before the server command)")
    return (BINDER / "postBuild").read_text().splitlines()[0]


def torch_home() -> str:
    # the user's real torch cache: where a network exists, the 528 MB weights are fetched once, not per check
    cache = os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache"))
    return os.environ.get("TORCH_HOME", os.path.join(cache, "torch"))


@functools.cache
def post_build() -> tuple[tempfile.TemporaryDirectory, list[str], subprocess.CompletedProcess]:
    """Run postBuild with the images from a local mirror into a temporary cache."""
    images = Path(os.environ.get("LRP_WIDGETS_IMAGES", ROOT.parent / "shared" / "images"))
    if not images.is_dir():
        raise Fail(f"no local images at {images}: set LRP_WIDGETS_IMAGES")
    cache = tempfile.TemporaryDirectory(prefix="lrp-binder-check-")  # removed at exit
    env = {k: v for k, v in os.environ.items() if k != "LRP_WIDGETS_IMAGES"}
    env.update(XDG_CACHE_HOME=cache.name, TORCH_HOME=torch_home(),
               PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]))
    with mirror(images) as (url, served):
        env["LRP_WIDGETS_IMAGES_URL"] = url
        try:
            done = subprocess.run([str(BINDER / "postBuild")], cwd=ROOT, env=env, capture_output=True, text=True,
                                  timeout=600)
        except subprocess.TimeoutExpired:
            raise Fail("postBuild ran over 10 minutes") from None
    return cache, served, done


def check_images() -> str:
    """postBuild fetches the images"""
    cache, served, done = post_build()
    for filename, _, digest in EXAMPLES.values():
        path = Path(cache.name, "lrp-widgets", "images", filename)
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            raise Fail(f"{filename} missing or wrong in the cache: {(done.stderr.strip().splitlines() or [''])[-1]}")
    return f"{len(served)} files from the local mirror, sha256 ok: {', '.join(EXAMPLES)}"


def check_weights() -> str:
    """postBuild fetches the weights"""
    _, _, done = post_build()
    checkpoint = Path(torch_home()) / "hub" / "checkpoints" / "vgg16-397923af.pth"
    if done.returncode == 0 and checkpoint.is_file():
        return f"cached at {checkpoint}"
    message = next((line for line in done.stderr.splitlines() if WEIGHTS_MESSAGE in line), None)
    if done.returncode and message and not reachable(TORCH_INDEX + "/"):
        return f"offline, fails as it should: {message.split('errors.', 1)[-1][:160]}…"
    raise Fail(f"exit {done.returncode}: {(done.stderr.strip().splitlines() or [''])[-1][:200]}")


CHECKS = (check_requirements, check_runtime, check_pypi, check_pins, check_cpu_wheels, check_executable,
          check_images, check_weights)


def main() -> int:
    failed = 0
    for check in CHECKS:
        try:
            status, detail = "ok", check()
        except Skip as why:
            status, detail = "skip", str(why)
        except Exception as error:  # one line per check, whatever went wrong
            status, detail = "FAIL", str(error) if isinstance(error, Fail) else f"{type(error).__name__}: {error}"
        print(f"{status:4} {check.__doc__}: {' '.join(detail.split())}", flush=True)
        failed += status == "FAIL"
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
