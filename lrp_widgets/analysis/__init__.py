"""Analysis on top of an explanation: rendering, the neuron graph, paths, thresholds, metrics."""
