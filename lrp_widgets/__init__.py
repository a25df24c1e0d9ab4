"""lrp-widgets: explore what a CNN sees with layer-wise relevance propagation."""
