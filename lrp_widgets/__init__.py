"""lrp-widgets: explore what a CNN sees with layer-wise relevance propagation.

>>> from lrp_widgets import Explorer  # doctest: +SKIP
>>> Explorer(model="vgg16", weights="auto", image="castle")  # doctest: +SKIP
"""


def __getattr__(name: str):
    if name == "Explorer":  # the widgets stack is imported only when asked for
        from .views import Explorer

        return Explorer
    raise AttributeError(name)
