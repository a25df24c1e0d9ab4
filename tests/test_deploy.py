"""The shipped Voila settings: at most ``max_kernels`` visitors at once, a clear 503 beyond."""
import urllib.error
import urllib.request

from lrp_widgets.app import VOILA_SETTINGS, running_app

from .conftest import IMAGES


def test_settings_hide_tracebacks_and_cull_idle_kernels():
    assert "--VoilaConfiguration.show_tracebacks=False" in VOILA_SETTINGS
    assert any(s.startswith("--MappingKernelManager.cull_idle_timeout=") for s in VOILA_SETTINGS)


def test_a_visitor_beyond_max_kernels_gets_a_clear_503():
    env = {"LRP_WIDGETS_WEIGHTS": "random", "LRP_WIDGETS_MODEL": "vgg11", "LRP_WIDGETS_IMAGES": str(IMAGES)}
    with running_app(env, max_kernels=1) as url:
        first = urllib.request.urlopen(url, timeout=300).read().decode()
        assert "application/vnd.jupyter.widget-view+json" in first  # the Explorer cell ran and shows a widget
        assert "Traceback" not in first and "server is full" not in first
        try:
            urllib.request.urlopen(url, timeout=300)
            raise AssertionError("the second visitor got a kernel")
        except urllib.error.HTTPError as error:
            assert error.code == 503 and "server is full" in error.read().decode().lower()
