"""LayerGraph: the neuron graph as layered columns (ipycytoscape).

Nodes are sized by |relevance| and coloured by its sign; edge width follows the flow; the k best
paths (of the full graph) are coloured by rank (dark red the best, thicker; light orange the k-th, a key in the
legend), dashed through a neuron α drops. At the α layer the
neurons Algorithm 1 drops are faded.
Column headers name the layers (VGG: conv1_1 …; ResNet: its blocks, layer1.0 …; DenseNet: denseblock1 …)
in two staggered rows, so that each has two columns' width; the α layer's says how many neurons α keeps. Every graph
spans VGG16's width (fewer columns: wider apart; more: closer, down to ``MIN_COLUMN``), which fits a 768 px window
with labels of 11 px or more. Hovering shows a node's layer, index and relevance; clicking selects the neuron (the
page brings its deconvolution into view); the wheel zooms within bounds and "fit" shows the whole graph again.
"""
from __future__ import annotations

import ipycytoscape
import ipywidgets as widgets

from .common import View, about, how_to_read, layer_label, paths_shown

MIN_COLUMN, MAX_COLUMN, ROW = 44, 150, 34
#: the columns' span (graph units): VGG16's 16 columns 50 apart, drawn whole with labels of 11 px or more in a
#: 768 px window (zoom ≥ 0.8)
SPAN = 15 * 50
#: the canvas's widest (zoom ~0.9): the browser does not fit the graph again when its canvas shrinks, so a canvas no
#: wider keeps the graph whole when JupyterLab's side panel opens beside a 1280 px notebook ("fit" does elsewhere)
WIDEST = "760px"
#: the centres of the column headers' two rows: odd columns' headers above the even ones'
HEADER_ROWS = (-ROW - 10, -ROW - 54)
EDGES_PER_NODE = 3
MIN_ZOOM, MAX_ZOOM = 0.2, 4.0
HOVER_HINT = "hover a neuron for its layer, index and relevance; click it (or pick it below) to select it"
#: what the drawing means, for the legend under the graph
LEGEND = ("<b>How to read:</b> one column per layer (or block), input side on the left; each circle is one of the "
          "most relevant neurons (channels) of its layer, the class on the right. "
          "<b>Size</b> = |relevance| · <span style='color:#d62728'>●</span> red: evidence for the class · "
          "<span style='color:#1f77b4'>●</span> blue: against · <b>grey lines</b>: relevance flowing between "
          "neurons, wider = more · <span style='color:#cb181d'><b>coloured lines</b></span>: the k best paths of the "
          "full graph, from dark red (path 1, the best, thickest) to light orange (path k); an edge shared by "
          "several paths has the best one's colour; α does not change them; dashed where a path runs through a "
          "neuron α drops · <b>faded</b>: neurons that α drops at the yellow layer.")
#: the grey of the graph's edges, and the paths' colours by rank: dark red (the best) to light orange (the k-th)
EDGE_COLOUR, PATH_RAMP = "#9aa7b8", ((103, 0, 13), (203, 24, 29), (251, 106, 74), (253, 174, 107))

STYLE = [
    {"selector": "node", "style": {"width": "data(size)", "height": "data(size)", "background-color": "data(colour)",
                                   "label": "data(label)", "font-size": 14, "text-valign": "center",
                                   "text-halign": "right", "text-margin-x": 2, "text-background-color": "#fff",
                                   "text-background-opacity": 0.85, "text-background-padding": 1,
                                   "border-width": 1, "border-color": "#555", "z-index": 20}},
    {"selector": "node.dropped", "style": {"opacity": 0.25}},
    {"selector": "node.class-node", "style": {"text-valign": "bottom", "text-halign": "center", "text-margin-x": 0,
                                              "text-wrap": "wrap", "text-max-width": 80}},
    {"selector": "node.header", "style": {"shape": "round-rectangle", "width": "data(size)", "height": 32,
                                          "background-color": "#eee", "text-valign": "center", "text-halign": "center",
                                          "text-margin-x": 0, "font-size": 14, "text-wrap": "wrap",
                                          "text-max-width": "data(size)", "text-background-opacity": 0,
                                          "border-width": 0}},
    # one class in the selector: "node.header.alpha-layer" never matched the headers on the page
    {"selector": "node.alpha-layer", "style": {"background-color": "#ffd966", "font-weight": "bold",
                                               "height": 52}},  # three lines: "layer4.2", "2048/2048", "kept"
    {"selector": "node.selected-neuron", "style": {"border-width": 4, "border-color": "#000"}},
    {"selector": "edge", "style": {"width": "data(width)", "line-color": "data(colour)", "opacity": 0.5,
                                   "curve-style": "straight"}},
    {"selector": "edge.path", "style": {"width": 2.5, "opacity": 0.9, "z-index": 9}},  # every path seen
    {"selector": "edge.longest", "style": {"width": 5, "opacity": 1, "z-index": 10}},
    {"selector": "edge.through-dropped", "style": {"line-style": "dashed"}},
]


def path_colours(k: int) -> list[str]:
    """The colours of paths 1 … k: ``PATH_RAMP`` spread over the k (one path: the darkest)."""
    def colour(t: float) -> str:
        i = min(int(t * (len(PATH_RAMP) - 1)), len(PATH_RAMP) - 2)
        f = t * (len(PATH_RAMP) - 1) - i
        return "#" + "".join(f"{round(a + (b - a) * f):02x}" for a, b in zip(PATH_RAMP[i], PATH_RAMP[i + 1]))
    return [colour(rank / max(k - 1, 1)) for rank in range(k)]


def column_label(name: str) -> str:
    """A column's header: the layer's own name without its container's ("denseblock1" for features.denseblock1),
    whole where that is a number (layer1.0, features.3)."""
    last = name.rsplit(".", 1)[-1]
    return name if last.isdigit() else last


def header_width(label: str, step: float) -> float:
    """A header's width (graph units): its label's (at least a count's, "2048/2048"), at most two columns'."""
    return min(2 * step - 10, 12 + 8.5 * max(len(label), 9))


def column_step(columns: int) -> float:
    """The distance between columns: they span ``SPAN`` (within ``MIN_COLUMN`` … ``MAX_COLUMN`` apart)."""
    return max(MIN_COLUMN, min(MAX_COLUMN, SPAN / max(columns - 1, 1)))


class LayerGraph(View):
    """The published result's neuron graph; draws nothing of another class while its graph is computed."""

    observes = ("result",)

    def __init__(self, state, height: str = "340px"):
        self.cytoscape = ipycytoscape.CytoscapeWidget(layout=widgets.Layout(width="100%", height="100%"))
        self.cytoscape.set_style(STYLE)
        # preset before any node exists: every later relayout keeps our columns (a force layout run first
        # would move the nodes, and "preset" keeps whatever positions the nodes have)
        self.cytoscape.set_layout(name="preset", fit=True, padding=12, animate=False)
        # the wheel zooms within bounds, gently: the graph never shrinks to a dot; "fit" brings it back
        self.cytoscape.min_zoom, self.cytoscape.max_zoom, self.cytoscape.wheel_sensitivity = MIN_ZOOM, MAX_ZOOM, 0.3
        self.cytoscape.tooltip_source = "no-tooltip"  # ipycytoscape's click tooltips never close: hover shows the line below
        self.cytoscape.on("node", "click", self._clicked)
        self.cytoscape.on("node", "mouseover", self._hovered)
        self.cytoscape.on("node", "mouseout", self._left)
        self.fit = widgets.Button(description="fit", tooltip="show the whole graph", icon="",
                                  layout=widgets.Layout(width="60px"))
        self.fit.on_click(lambda _: self.cytoscape.relayout())
        self.hover = widgets.HTML(HOVER_HINT)
        self.hover.add_class("lrp-hover")
        self.neuron = widgets.Dropdown(description="neuron", options=[("— pick a neuron —", ())],
                                       layout=widgets.Layout(width="300px"))
        self.neuron.observe(self._picked, "value")
        # counts the neurons the user chose: the app's page brings the deconvolution into view at each (template lrp)
        self.chosen = widgets.HTML("0", layout=widgets.Layout(display="none"))
        self.chosen.add_class("lrp-neuron-chosen")
        self.legend = widgets.HTML()
        self.legend.add_class("lrp-graph-legend")
        self.how = how_to_read(LEGEND, "100%")
        canvas = widgets.Box([self.cytoscape], layout=widgets.Layout(width="100%", max_width=WIDEST, height=height))
        frame = widgets.Box([canvas], layout=widgets.Layout(width="100%", justify_content="center", overflow="hidden",
                                                            border="1px solid #ddd"))
        frame.add_class("lrp-graph-frame")
        super().__init__(state, [widgets.HBox([self.fit, self.neuron, self.hover]), frame, self.legend, self.how,
                                 self.chosen],
                         layout=widgets.Layout(width="100%"))
        self._edge_ids: set[tuple[str, str]] = set()
        self._builds = 0
        self.refresh()

    def fresh(self) -> bool:
        return self.current("graph", "paths")

    def render(self) -> None:
        result = self.state.result
        if result is None or result.graph is None:
            return  # the graph on screen stays, dimmed, until the new one is computed
        if self.changed("graph", result.graph):
            self._build(result)
        self._highlight(result)

    def _build(self, result) -> None:
        """A new graph: its nodes and edges replace the old ones in one update. Each element is created with all
        its data (so the browser never sees an element without its id), ids are new for every graph (the
        browser removes old elements asynchronously), and an edge never arrives before its nodes, however
        loaded the machine."""
        self._builds += 1
        self.hover.value = HOVER_HINT  # the neuron hovered last is of another graph
        graph = result.graph
        names = result.bundle.layer_name
        top = max((abs(n.relevance) for layer in graph.layers for n in graph.nodes[layer]), default=1.0) or 1.0
        with self.quietly():
            self.neuron.options = [("— pick a neuron —", ())] + [
                (f"{names(layer)} #{n.index} (R = {n.relevance:.3g})", (layer, n.index))
                for layer in reversed(graph.layers[:-1]) for n in graph.nodes[layer]]
        nodes, step = [], column_step(len(graph.layers))
        for column, layer in enumerate(graph.layers):
            nodes.append(ipycytoscape.Node(
                data={"id": self._id(f"header:{layer}"), "layer": layer, "name": names(layer),
                      "label": column_label(names(layer)), "size": header_width(column_label(names(layer)), step),
                      "colour": "#eee"}, classes="header",
                position={"x": column * step, "y": HEADER_ROWS[column % 2]}))
            for row, node in enumerate(graph.nodes[layer]):
                last = layer == graph.layers[-1]
                nodes.append(ipycytoscape.Node(
                    data={"id": self._id(node.id), "neuron": node.id, "layer": layer, "index": node.index,
                          "relevance": node.relevance, "name": names(layer),
                          "label": result.bundle.model.category(node.index) if last else str(node.index),
                          "role": "class-node " if last else "", "size": 8 + 12 * (abs(node.relevance) / top) ** 0.5,
                          "colour": "#d62728" if node.relevance >= 0 else "#1f77b4"},
                    classes="class-node" if last else "",
                    position={"x": column * step, "y": row * ROW + (len(graph.nodes[layer]) == 1) * 3.5 * ROW}))
        flows = graph.edges()
        self._flows = {(u.id, v.id): w for u, v, w in flows}
        self._best = max((abs(w) for _, _, w in flows), default=1.0) or 1.0
        by_source: dict[str, list] = {}
        for u, v, w in flows:
            by_source.setdefault(u.id, []).append((u.id, v.id))
        marks = self._marks(result)
        pairs = list(dict.fromkeys([pair for items in by_source.values() for pair in
                                    sorted(items, key=lambda pair: -abs(self._flows[pair]))[:EDGES_PER_NODE]]
                                   + sorted(marks[0])))
        self._edge_ids = set(pairs)
        self._replace(nodes, [self._edge(pair, *self._look(pair, *marks)) for pair in pairs])

    def _replace(self, nodes: list, edges: list) -> None:
        """Every element of the drawing at once, in one message; then the old elements are closed. Held until
        then: an element garbage-collected inside the hold would be closed in the browser before the message
        that drops it from the graph, and the browser could not apply that message."""
        graph = self.cytoscape.graph
        old = [*graph.nodes, *graph.edges]
        with graph.hold_sync():
            graph.nodes, graph.edges = nodes, edges
        for element in old:
            element.close()

    def _id(self, name: str) -> str:
        return f"g{self._builds}/{name}"

    def _edge(self, pair: tuple[str, str], classes: str = "", colour: str = EDGE_COLOUR) -> ipycytoscape.Edge:
        (u, v), flow = pair, self._flows[pair]
        return ipycytoscape.Edge(data={"id": self._id(f"{u}->{v}"), "pair": f"{u}->{v}", "source": self._id(u),
                                       "target": self._id(v), "weight": flow, "colour": colour,
                                       "width": 0.5 + 4 * abs(flow) / self._best}, classes=classes)

    @staticmethod
    def _marks(result) -> tuple[dict, set, set]:
        """The edges of the k paths, each with the colour of the best path through it; those of the best path; and
        the neurons α drops (as neuron ids)."""
        paths = result.paths or ()
        colours: dict[tuple[str, str], str] = {}
        for path, colour in reversed(list(zip(paths, path_colours(len(paths))))):
            colours.update(dict.fromkeys(path.edges, colour))
        kept = result.selection.kept if result.selection is not None else None
        dropped = ({f"{result.layer}:{i}" for i in (~kept).nonzero().flatten().tolist()}
                   if kept is not None else set())
        return colours, paths[0].edges if paths else set(), dropped

    @staticmethod
    def _look(pair, colours, longest, dropped) -> tuple[str, str]:
        """An edge's classes and colour (a path's edge: its best path's; the others grey)."""
        classes = (("path " if pair in colours else "") + ("longest " if pair in longest else "") + (
            "through-dropped" if pair in colours and (pair[0] in dropped or pair[1] in dropped) else "")).strip()
        return classes, colours.get(pair, EDGE_COLOUR)

    def _highlight(self, result) -> None:
        request = result.request
        marks = self._marks(result)
        dropped = marks[2]
        kept = result.selection.kept if result.selection is not None else None
        missing = [pair for pair in sorted(marks[0]) if pair not in self._edge_ids]
        if missing:  # the paths arrived after the graph: their edges join it (its nodes are already drawn)
            self._edge_ids |= set(missing)
            self.cytoscape.graph.edges = [*self.cytoscape.graph.edges, *map(self._edge, missing)]
        for edge in self.cytoscape.graph.edges:
            classes, colour = self._look(tuple(edge.data["pair"].split("->")), *marks)
            self._set(edge, classes, colour=colour)
        selected = f"{request.selected[0]}:{request.selected[1]}" if request.selected else ""
        for node in self.cytoscape.graph.nodes:
            if "index" not in node.data:  # a column header: the α layer's shows how many neurons α keeps
                here = node.data["layer"] == result.layer and kept is not None
                name = column_label(node.data["name"])
                label = f"{name}\n{int(kept.sum())}/{kept.numel()} kept" if here else name
                self._set(node, "header alpha-layer" if here else "header", label)
                continue
            self._set(node, node.data["role"] + ("dropped " if node.data["neuron"] in dropped else "")
                      + ("selected-neuron" if node.data["neuron"] == selected else ""))
        key = " ".join(f'<span class="lrp-path-key" style="color:{colour};white-space:nowrap"><b>━</b> path '
                       f"{rank}</span>" for rank, colour in enumerate(path_colours(len(result.paths or ())), 1))
        paths = ("<i>finding the best paths…</i>" if result.paths is None else
                 f"{paths_shown(result)}: {key}" if result.paths else paths_shown(result))
        self.legend.value = (f"{about(result)} · {paths} · faded: the neurons that α = "
                             f"{request.alpha:g} drops at {layer_label(result.bundle, result.layer)}")
        with self.quietly():
            self.neuron.value = tuple(request.selected) if tuple(request.selected) in [
                value for _, value in self.neuron.options] else ()

    @staticmethod
    def _set(element, classes: str, label: str | None = None, **data) -> None:
        if element.classes.strip() != classes.strip():
            element.classes = classes.strip()
        data = {**data, **({"label": label} if label is not None else {})}
        if any(element.data.get(name) != value for name, value in data.items()):
            element.data = {**element.data, **data}

    def _clicked(self, node: dict) -> None:
        data = node["data"]
        if "index" in data and self._shows_the_model():
            self._choose((data["layer"], int(data["index"])))

    def _picked(self, change) -> None:
        if change["new"] and not self.syncing and self._shows_the_model():
            self._choose(tuple(change["new"]))

    def _choose(self, neuron: tuple[str, int]) -> None:
        self.state.selected = neuron
        self.chosen.value = str(int(self.chosen.value) + 1)

    def _shows_the_model(self) -> bool:
        """Whether the graph on screen is of the chosen model (a click on a replaced model's neuron is no choice)."""
        state = self.state
        return state.result is not None and (state.result.request.model_name, state.result.request.weights) == (
            state.model_name, state.weights)

    def _hovered(self, node: dict) -> None:
        data = node["data"]
        where = f"<b>{data['name']}</b>" + (f" ({data['layer']})" if data["name"] != data["layer"] else "")
        self.hover.value = where if "index" not in data else (
            f"{where} neuron #{data['index']}, relevance {data['relevance']:.4g}")

    def _left(self, node: dict) -> None:
        self.hover.value = HOVER_HINT
