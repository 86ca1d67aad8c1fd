"""Graph edits the INT8 forms share: a node list set as the graph with what it no longer uses
gone, and the check that every tensor read is defined."""

from __future__ import annotations

import onnx


def all_defined(model: onnx.ModelProto) -> bool:
    """Whether every tensor a node reads is a graph input, an initializer or a node's output."""
    known = {i.name for i in model.graph.input} | {i.name for i in model.graph.initializer}
    for node in model.graph.node:
        if any(i and i not in known for i in node.input):
            return False
        known.update(node.output)
    return True


def keep_live(
    model: onnx.ModelProto, nodes: list[onnx.NodeProto], new_inits: list[onnx.TensorProto]
) -> list[onnx.NodeProto]:
    """Set the graph's nodes to `nodes` minus those whose outputs nothing uses any more (and
    drop what only they used: initializers, their graph input entries, shape records);
    returns the nodes kept."""
    g = model.graph
    wanted = {o.name for o in g.output}
    live: list[onnx.NodeProto] = []
    for node in reversed(nodes):
        if any(o in wanted for o in node.output):
            live.append(node)
            wanted.update(i for i in node.input if i)
    live.reverse()
    inits = [i for i in [*g.initializer, *new_inits] if i.name in wanted]
    dropped = {i.name for i in g.initializer} - wanted
    inputs = [i for i in g.input if i.name not in dropped]
    produced = {o for node in live for o in node.output}
    shapes = [v for v in g.value_info if v.name in produced]
    del g.node[:]
    g.node.extend(live)
    del g.initializer[:]
    g.initializer.extend(inits)
    del g.input[:]
    g.input.extend(inputs)
    del g.value_info[:]
    g.value_info.extend(shapes)
    return live
