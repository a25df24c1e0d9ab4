"""A Binder session reproduced as closely as this machine allows (issue 11): CPU-only torch in its own
venv, the app inside a cgroup-v1 memory group with Binder's 2 GiB limit, driven in Debian's Chromium.

``binder_venv()`` builds the venv (``.venv-binder``: torch +cpu, this package editable), ``memory_group``
makes the group and samples its anonymous memory, ``binder_app`` serves the app from that venv inside
the group, ``teaching_session`` and ``reload_session`` drive a page through what a visitor does.
Used by tests/test_binder_session.py and ``python -m bench binder``.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

from lrp_widgets.app import free_port
from tests.test_app_browser import (
    ARTIFACTS,
    bar_class,
    classes_shown,
    example_button,
    heatmap,
    idle,
    pick_model,
    upload,
    views,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv-binder"
IMAGES = Path(os.environ.get("LRP_WIDGETS_IMAGES", ROOT.parent / "shared" / "images"))
MiB, GiB = 2**20, 2**30
BINDER_LIMIT = 2 * GiB  # mybinder.org's memory limit
STEP_TIMEOUT = 300  # seconds for one step of a session: a first load takes 30+ s on two cores
CPU_CHECK = "import torch, torchvision; assert torch.__version__.endswith('+cpu'), torch.__version__"
LOAD_WEIGHTS = "import sys; from lrp_widgets.engine.models import load_model; load_model('vgg16', sys.argv[1])"


# the venv --------------------------------------------------------------------------------------------
def binder_venv() -> Path:
    """``.venv-binder``: Python 3.11, torch 2.13.0+cpu, torchvision 0.28.0 and this package (editable);
    built once, rebuilt when pyproject.toml is newer than its ``.installed`` marker."""
    marker = VENV / ".installed"
    if marker.exists() and marker.stat().st_mtime >= (ROOT / "pyproject.toml").stat().st_mtime:
        return VENV
    python = VENV / "bin" / "python"

    def run(*args: str | Path) -> None:
        done = subprocess.run([str(a) for a in args], check=False, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{' '.join(map(str, args))} failed:\n{done.stderr[-3000:]}")

    if not python.exists():
        run(shutil.which("python3.11") or "python3.11", "-m", "venv", VENV)
    pip = (python, "-m", "pip", "install", "-q")
    run(*pip, "torch==2.13.0")  # the +cpu build from /opt/wheels
    run(*pip, "--no-deps", "torchvision==0.28.0")
    # PyPI's torchvision is a CUDA build: its compiled ops cannot load beside CPU torch, and its fake-op
    # registrations then fail ("operator torchvision::nms does not exist"). VGG uses none of those ops.
    for meta in VENV.glob("lib/python3*/site-packages/torchvision/_meta_registrations.py"):
        meta.write_text('"""Emptied by tests/binder.py: the CUDA build\'s ops are absent beside CPU torch."""\n')
    run(*pip, "-e", ROOT)
    run(python, "-c", CPU_CHECK)
    marker.touch()
    return VENV


# the memory group ------------------------------------------------------------------------------------
class CgroupUnavailable(RuntimeError):
    """No cgroup-v1 memory group can be made here; the message says why."""


class Group:
    """A cgroup-v1 memory group: put children in with ``Popen(preexec_fn=group.preexec)`` (their
    descendants follow); a thread samples the anonymous memory (``total_rss``) every 0.1 s."""

    def __init__(self, path: Path):
        self.path = path
        self._procs = str(path / "cgroup.procs")
        self.peak_rss_bytes = 0
        self._seen: set[int] = set()
        self._vanished_under_pressure = 0  # OOM kills on kernels without an oom_kill count
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, name="memory-group-sampler", daemon=True)
        self._sampler.start()

    def read(self, name: str) -> str:
        return (self.path / name).read_text()

    def stat(self) -> dict[str, int]:
        return {key: int(value) for key, value in (line.split() for line in self.read("memory.stat").splitlines())}

    def pids(self) -> list[int]:
        return [int(pid) for pid in self.read("cgroup.procs").split()]

    def preexec(self) -> None:
        """Move the calling process (a child between fork and exec) into the group. Safe beside the
        sampler thread: two system calls, no lock that thread could hold at the fork."""
        fd = os.open(self._procs, os.O_WRONLY)
        try:
            os.write(fd, str(os.getpid()).encode())
        finally:
            os.close(fd)

    @property
    def rss_bytes(self) -> int:
        """Anonymous memory of every process in the group now."""
        return self.stat()["total_rss"]

    @property
    def max_usage_bytes(self) -> int:
        """The group's peak charge: anonymous memory *and* reclaimable page cache."""
        return int(self.read("memory.max_usage_in_bytes"))

    @property
    def failcnt(self) -> int:
        """How often a charge hit the limit (the kernel then reclaims cache, or kills)."""
        return int(self.read("memory.failcnt"))

    @property
    def oom_kills(self) -> int:
        """Processes the OOM killer killed in this group."""
        for line in self.read("memory.oom_control").splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
        return self._vanished_under_pressure

    def commands(self) -> dict[int, str]:
        """Command line of each process in the group."""
        found = {}
        for pid in self.pids():
            try:
                found[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            except OSError:
                continue
        return found

    def kernels(self) -> list[int]:
        """The ipykernel processes in the group."""
        return [pid for pid, command in self.commands().items() if "ipykernel" in command]

    def figures(self) -> dict[str, float]:
        """The readouts, in MiB where they are sizes (read them before the group is closed)."""
        return {"peak_anon_mib": self.peak_rss_bytes / MiB, "max_usage_mib": self.max_usage_bytes / MiB,
                "failcnt": self.failcnt, "oom_kills": self.oom_kills}

    def summary(self) -> str:
        return ("peak anonymous memory {peak_anon_mib:.0f} MiB, max usage with page cache {max_usage_mib:.0f} MiB, "
                "failcnt {failcnt}, OOM kills {oom_kills}".format(**self.figures()))

    def _sample(self) -> None:
        failcnt = 0
        while not self._stop.wait(0.1):
            try:
                self.peak_rss_bytes = max(self.peak_rss_bytes, self.rss_bytes)
                pids, now = set(self.pids()), self.failcnt
            except OSError:  # the group is going away
                return
            if now > failcnt:  # processes gone while charges hit the limit: count them as killed
                self._vanished_under_pressure += len(self._seen - pids)
            self._seen, failcnt = pids, now

    def kill(self, timeout: float = 10) -> None:
        """SIGKILL every process left in the group and wait until it is empty."""
        deadline = time.monotonic() + timeout
        while (pids := self.pids()) and time.monotonic() < deadline:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)

    def close(self) -> None:
        self._stop.set()
        self._sampler.join()
        self.peak_rss_bytes = max(self.peak_rss_bytes, self.rss_bytes)
        self.kill()
        self.path.rmdir()


def memory_mount() -> Path:
    """Where the cgroup-v1 memory controller is mounted."""
    for line in Path("/proc/mounts").read_text().splitlines():
        _, point, kind, options, *_ = line.split()
        if kind == "cgroup" and "memory" in options.split(","):
            return Path(point)
    raise CgroupUnavailable("no cgroup-v1 memory controller is mounted here (cgroup v2 only?)")


@contextmanager
def memory_group(limit_bytes: int) -> Iterator[Group]:
    """A new memory group under this process's own, limited to ``limit_bytes`` with swap off; on exit
    every process left in it is killed and the group removed. ``CgroupUnavailable`` says why none can be made."""
    if os.geteuid() != 0:
        raise CgroupUnavailable("making a cgroup-v1 memory group needs root")
    mount = memory_mount()
    own = next((line.split(":", 2)[2] for line in Path("/proc/self/cgroup").read_text().splitlines()
                if "memory" in line.split(":")[1].split(",")), "/")
    parent = mount / own.lstrip("/") if (mount / own.lstrip("/")).is_dir() else mount
    path = parent / f"lrp-binder-{os.getpid()}-{time.monotonic_ns()}"
    try:
        path.mkdir()
        (path / "memory.limit_in_bytes").write_text(str(limit_bytes))
    except OSError as error:
        if path.is_dir():
            path.rmdir()
        raise CgroupUnavailable(f"cannot make a memory group under {parent}: {error}") from None
    try:
        (path / "memory.swappiness").write_text("0")
    except OSError:
        pass  # no swap on Binder either way
    group = Group(path)
    try:
        yield group
    finally:
        group.close()


# the app ---------------------------------------------------------------------------------------------
@contextmanager
def binder_app(group: Group, weights: str = "random", extra_args: Sequence[str] = (), log: str = "binder-app",
               timeout: float = 180) -> Iterator[str]:
    """``lrp-widgets app`` of the Binder venv serving on a free port inside ``group`` while the block runs;
    yields its URL. The weights are loaded once outside the group first, as Binder's build does
    (binder/postBuild): whatever that caches is in place before the session. Logs to test-artifacts/LOG.log;
    afterwards its process group and every process left in ``group`` (kernels run in their own sessions)
    are killed."""
    venv = binder_venv()
    port = free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    env = dict(os.environ, LRP_WIDGETS_IMAGES=str(IMAGES), VIRTUAL_ENV=str(venv),
               PATH=os.pathsep.join([str(venv / "bin"), os.environ.get("PATH", "")]))
    subprocess.run([str(venv / "bin" / "python"), "-W", "ignore", "-c", LOAD_WEIGHTS, weights], env=env, check=True)
    command = [str(venv / "bin" / "lrp-widgets"), "app", "--weights", weights, "--no-browser", "--port", str(port),
               *extra_args]
    with open(ARTIFACTS / f"{log}.log", "w") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, cwd=ROOT,
                                   preexec_fn=group.preexec, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + timeout
        while not listening(url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the app did not start; see {ARTIFACTS / f'{log}.log'}")
            time.sleep(0.5)
        yield url
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        group.kill()


def listening(url: str) -> bool:
    """Whether a server accepts connections at ``url``'s port (a GET of the page would start a kernel)."""
    try:
        socket.create_connection(("127.0.0.1", urllib.parse.urlsplit(url).port), timeout=1).close()
    except OSError:
        return False
    return True


def torch_libraries(pid: int) -> set[str]:
    """The libtorch files a process has mapped."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {line.split()[-1] for line in maps.splitlines() if "/libtorch" in line}


def new_page(browser):
    """A page in a context of its own (one visitor), its console errors collected for ``wait_until``."""
    page = browser.new_context(viewport={"width": 1440, "height": 1000}).new_page()
    page.set_default_timeout(STEP_TIMEOUT * 1000)
    page.console_errors = []
    page.on("console", lambda m: m.type == "error" and page.console_errors.append(m.text))
    page.on("pageerror", lambda e: page.console_errors.append(str(e)))
    return page


# the sessions ----------------------------------------------------------------------------------------
def settled(page) -> str | None:
    """The class every view shows once the app is idle and all views agree on it, else None."""
    if not idle(page):
        return None
    shown = set(classes_shown(page).values())
    return shown.pop() if len(shown) == 1 else None


def wait_step(page, what: str, condition: Callable[[], bool], group: Group | None = None) -> None:
    """Until ``condition`` holds with the app settled; fails at once when the OOM killer strikes in ``group``."""
    def done() -> bool:
        if group is not None and group.oom_kills:
            page.screenshot(path=str(ARTIFACTS / "binder-oom.png"))
            raise AssertionError(f"the OOM killer struck while waiting for {what}: {group.summary()}")
        return settled(page) is not None and condition()

    wait_until(page, done, what, STEP_TIMEOUT)


class Steps:
    """Times the steps of a session; a screenshot test-artifacts/PREFIX-N-STEP.png after each."""

    def __init__(self, page, prefix: str):
        self.page, self.prefix, self._start = page, prefix, time.perf_counter()
        self.seconds: dict[str, float] = {}

    def done(self, name: str) -> None:
        self.seconds[name] = time.perf_counter() - self._start
        self.page.screenshot(path=str(ARTIFACTS / f"{self.prefix}-{len(self.seconds)}-{name}.png"))
        self._start = time.perf_counter()


def load_app(page, url: str, group: Group | None = None) -> None:
    """Open the app and wait for the castle's explanation."""
    page.goto(url, wait_until="commit")
    wait_step(page, "the castle's explanation", lambda: views(page)["image"] == "image: castle", group)


def show_example(page, name: str, group: Group | None = None) -> None:
    before = heatmap(page, "relevance")
    example_button(page, name).click()
    wait_step(page, f"the {name}'s explanation",
              lambda: views(page)["image"] == f"image: {name}" and heatmap(page, "relevance") != before, group)


def teaching_session(page, url: str, upload_path: Path, group: Group | None = None) -> dict[str, float]:
    """The teaching session of issue 11: load (castle), barn, zebra, another layer, another class, an
    upload; each step waits until every view shows its result. Returns seconds per step."""
    steps = Steps(page, "binder-teaching")
    load_app(page, url, group)
    steps.done("castle")
    for name in ("barn", "zebra"):
        show_example(page, name, group)
        steps.done(name)

    layers = page.locator(".widget-dropdown").filter(has=page.get_by_text("layer", exact=True)).locator("select")
    options = layers.locator("option").all_inner_texts()
    current = options.index(layers.evaluate("s => s.options[s.selectedIndex].text"))
    index = current - 1 if current else 1
    name = options[index].replace("\xa0", " ").split(" (")[0]  # "conv5_2 (features.26)"
    layers.select_option(index=index)
    wait_step(page, f"Algorithm 1 at {name}", lambda: f"neurons of {name} for class" in views(page)["text"], group)
    steps.done("layer")

    bar = 1 if views(page)["highlighted"] != [1] else 2
    chosen = bar_class(page, bar)
    page.locator(".bqplot .bar").nth(bar).click()
    wait_step(page, f"the class {chosen}", lambda: settled(page) == chosen, group)
    steps.done("class")

    before = heatmap(page, "relevance")
    upload(page, upload_path)
    wait_step(page, "the upload's explanation", lambda: views(page)["image"] == f"image: {upload_path.name}"
              and heatmap(page, "relevance") != before, group)
    steps.done("upload")
    return steps.seconds


#: issue 21's classroom: six models, one after the other
MODEL_SWITCHES = (("ResNet", "resnet50"), ("DenseNet", "densenet121"), ("VGG", "vgg19"), ("MobileNet", "mobilenet_v2"),
                  ("ResNet", "resnet152"), ("VGG", "vgg16"))


def model_switches(page, url: str, group: Group | None = None) -> dict[str, float]:
    """Load the app, pick the six models of ``MODEL_SWITCHES`` (each until every view shows it), then another class.
    Returns seconds per step."""
    steps = Steps(page, "binder-models")
    load_app(page, url, group)
    steps.done("castle")
    for family, variant in MODEL_SWITCHES:
        pick_model(page, family, variant)
        wait_step(page, f"{variant}'s explanation",
                  lambda: all(f" · {variant}:" in caption for caption in views(page)["captions"]), group)
        steps.done(variant)
    chosen = bar_class(page, 1)
    page.locator(".bqplot .bar").nth(1).click()
    wait_step(page, f"the class {chosen}", lambda: settled(page) == chosen, group)
    steps.done("class")
    return steps.seconds


def reload_session(page, url: str, group: Group | None = None) -> dict[str, float]:
    """Load the app, reload it twice (each time until the castle's explanation), then show the barn's
    explanation. Returns seconds per step."""
    steps = Steps(page, "binder-reload")
    load_app(page, url, group)
    steps.done("load")
    for step in ("reload-1", "reload-2"):
        page.reload(wait_until="commit")
        wait_step(page, "the castle's explanation after a reload", lambda: views(page)["image"] == "image: castle",
                  group)
        steps.done(step)
    show_example(page, "barn", group)
    steps.done("barn")
    return steps.seconds


def rotated_copy(folder: Path, name: str = "n02391049_zebra.JPEG") -> Path:
    """A rotated copy of a case-study image to upload."""
    from PIL import Image

    path = folder / f"rotated-{name.split('_', 1)[1].lower().replace('.jpeg', '.png')}"
    Image.open(IMAGES / name).convert("RGB").rotate(90, expand=True).save(path)
    return path
