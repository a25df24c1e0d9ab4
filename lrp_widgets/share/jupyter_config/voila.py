# Voila's settings for the app (standalone `lrp-widgets app`, or the server extension on Binder/JupyterHub).
from lrp_widgets.deploy import configure

configure(c)  # noqa: F821 - `c` is the config object Voila passes in
