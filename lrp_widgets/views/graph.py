"""LayerGraph: the neuron graph as layered columns (ipycytoscape).

Nodes are sized by |relevance| and coloured by its sign; edge width follows the flow; the k best
paths are red, the longest thicker. At the α layer the neurons Algorithm 1 drops are faded.
Column headers name the layers; the α layer's says how many neurons α keeps. Hovering shows a
node's layer, index and relevance; clicking selects the neuron.
"""
from __future__ import annotations

import ipycytoscape
import ipywidgets as widgets

from .common import View

COLUMN, ROW = 90, 46
EDGES_PER_NODE = 3

STYLE = [
    {"selector": "node", "style": {"width": "data(size)", "height": "data(size)", "background-color": "data(colour)",
                                   "label": "data(label)", "font-size": 9, "text-valign": "bottom",
                                   "border-width": 1, "border-color": "#555"}},
    {"selector": "node.dropped", "style": {"opacity": 0.25}},
    {"selector": "node.header", "style": {"shape": "round-rectangle", "width": 70, "height": 16,
                                          "background-color": "#eee", "text-valign": "center", "font-size": 8,
                                          "border-width": 0}},
    {"selector": "node.header.alpha-layer", "style": {"background-color": "#ffd966", "font-weight": "bold"}},
    {"selector": "node.selected-neuron", "style": {"border-width": 4, "border-color": "#000"}},
    {"selector": "edge", "style": {"width": "data(width)", "line-color": "#9aa7b8", "opacity": 0.5,
                                   "curve-style": "straight"}},
    {"selector": "edge.path", "style": {"line-color": "#d62728", "opacity": 0.9, "z-index": 9}},
    {"selector": "edge.longest", "style": {"width": 5, "line-color": "#a50000", "opacity": 1, "z-index": 10}},
]


class LayerGraph(View):
    observes = ("bundle", "paths_revision", "k", "layer", "alpha", "selected")

    def __init__(self, state, height: str = "320px"):
        self.cytoscape = ipycytoscape.CytoscapeWidget(layout=widgets.Layout(width="100%", height="100%"))
        self.cytoscape.set_style(STYLE)
        # preset before any node exists: every later relayout keeps our columns (a force layout run first
        # would move the nodes, and "preset" keeps whatever positions the nodes have)
        self.cytoscape.set_layout(name="preset", fit=True, padding=12, animate=False)
        self.cytoscape.user_zooming_enabled = True
        self.cytoscape.on("node", "click", self._clicked)
        self.cytoscape.on("node", "mouseover", self._hovered)
        self.hover = widgets.HTML("hover a node for its layer, index and relevance; click it to select it")
        frame = widgets.Box([self.cytoscape], layout=widgets.Layout(width="100%", height=height,
                                                                    border="1px solid #ddd"))
        super().__init__(state, [self.hover, frame], layout=widgets.Layout(width="100%"))
        self._shown = None
        self.refresh()

    def refresh(self) -> None:
        bundle = self.state.bundle
        if bundle is None:
            return
        if self._shown is not bundle:
            self._build(bundle)
        self._highlight(bundle)

    def _build(self, bundle) -> None:
        graph = bundle.graph()
        top = max((abs(n.relevance) for layer in graph.layers for n in graph.nodes[layer]), default=1.0) or 1.0
        nodes = []
        for column, layer in enumerate(graph.layers):
            nodes.append({"data": {"id": f"header:{layer}", "layer": layer, "label": layer, "size": 16,
                                   "colour": "#eee"}, "classes": "header",
                          "position": {"x": column * COLUMN, "y": -ROW}})
            for row, node in enumerate(graph.nodes[layer]):
                label = bundle.model.category(node.index) if layer == graph.layers[-1] else str(node.index)
                nodes.append({"data": {"id": node.id, "layer": layer, "index": node.index, "relevance": node.relevance,
                                       "label": label, "size": 10 + 26 * (abs(node.relevance) / top) ** 0.5,
                                       "colour": "#d62728" if node.relevance >= 0 else "#1f77b4",
                                       "tooltip": f"{layer} #{node.index}<br>R = {node.relevance:.4g}"},
                              "position": {"x": column * COLUMN, "y": row * ROW + (len(graph.nodes[layer]) == 1) * 3.5 * ROW}})
        edges = []
        flows = [(u, v, w) for u, v, w in graph.edges()]
        best = max((abs(w) for _, _, w in flows), default=1.0) or 1.0
        by_source: dict[str, list] = {}
        for u, v, w in flows:
            by_source.setdefault(u.id, []).append((u, v, w))
        for items in by_source.values():
            for u, v, w in sorted(items, key=lambda item: -abs(item[2]))[:EDGES_PER_NODE]:
                edges.append(self._edge(u.id, v.id, w, best))
        self._edge_ids = {e["data"]["id"] for e in edges}
        self._flows = {(u.id, v.id): w for u, v, w in flows}
        self._best = best
        self.cytoscape.graph.clear()
        self.cytoscape.graph.add_graph_from_json({"nodes": nodes, "edges": edges}, directed=False)
        self._shown = bundle

    @staticmethod
    def _edge(source: str, target: str, weight: float, best: float) -> dict:
        return {"data": {"id": f"{source}->{target}", "source": source, "target": target, "weight": weight,
                         "width": 0.5 + 4 * abs(weight) / best}}

    def _highlight(self, bundle) -> None:
        state = self.state
        path_edges, longest = set(), set()
        if state.paths_revision and bundle.has_paths(state.k):
            for rank, path in enumerate(bundle.paths(state.k)):
                path_edges |= path.edges
                if rank == 0:
                    longest = path.edges
        missing = [pair for pair in path_edges if f"{pair[0]}->{pair[1]}" not in self._edge_ids]
        if missing:
            self.cytoscape.graph.add_graph_from_json(
                {"nodes": [], "edges": [self._edge(u, v, self._flows[u, v], self._best) for u, v in missing]})
            self._edge_ids |= {f"{u}->{v}" for u, v in missing}
        for edge in self.cytoscape.graph.edges:
            pair = (edge.data["source"], edge.data["target"])
            classes = ("path " if pair in path_edges else "") + ("longest" if pair in longest else "")
            if edge.classes.strip() != classes.strip():
                edge.classes = classes
        kept = bundle.selection(state.layer, state.alpha).kept if state.layer in bundle.explanation.relevances else None
        selected = f"{state.selected[0]}:{state.selected[1]}" if state.selected else ""
        for node in self.cytoscape.graph.nodes:
            if "index" not in node.data:  # a column header: the α layer's shows how many neurons α keeps
                here = node.data["layer"] == state.layer and kept is not None
                label = f"{state.layer}: {int(kept.sum())}/{kept.numel()} kept" if here else node.data["layer"]
                self._set(node, "header alpha-layer" if here else "header", label)
                continue
            dropped = kept is not None and node.data["layer"] == state.layer and not bool(kept[node.data["index"]])
            self._set(node, ("dropped " if dropped else "") + ("selected-neuron" if node.data["id"] == selected else ""))

    @staticmethod
    def _set(node, classes: str, label: str | None = None) -> None:
        if node.classes.strip() != classes.strip():
            node.classes = classes
        if label is not None and node.data.get("label") != label:
            node.data = {**node.data, "label": label}

    def _clicked(self, node: dict) -> None:
        data = node["data"]
        if "index" in data:
            self.state.selected = (data["layer"], int(data["index"]))

    def _hovered(self, node: dict) -> None:
        data = node["data"]
        if "index" not in data:
            return
        self.hover.value = f"hover: <b>{data['layer']}</b> #{data['index']}, relevance {data['relevance']:.4g}"
