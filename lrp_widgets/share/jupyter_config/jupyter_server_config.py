# The Jupyter server's settings when Voila runs as its extension (Binder, JupyterHub): the same as the app's.
from lrp_widgets.deploy import configure

configure(c)  # noqa: F821 - `c` is the config object the server passes in
