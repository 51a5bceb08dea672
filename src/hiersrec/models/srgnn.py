"""SR-GNN: session-based recommendation with graph neural networks (Wu et al., AAAI 2019), per prefix.

Each prefix becomes a small directed graph: its distinct items are the nodes (in ascending item order, as
the authors' code takes ``np.unique``), and every pair of consecutive clicks ``u -> v`` is an edge (weight 1
however often it occurs, as in the code). Two normalised adjacency matrices carry the messages: row i of
``incoming`` averages node i's predecessors (each edge ``u -> i`` over i's in-degree), row i of ``outgoing``
its successors (``i -> v`` over i's out-degree). Gated GNN steps update the node vectors (the item
embeddings at the start) with a GRU-like cell fed by both messages; then every click takes its node's vector,
the last click's vector ``s_l`` is the local interest, a soft attention
``a_j = q . sigmoid(W_1 v_last + W_2 v_j + c)`` over the clicks sums the global interest ``s_g``, and the
session is ``W_3 [s_g; s_l]``, which scores every item by its inner product with the item embeddings,
trained with the cross-entropy over all items.

A prefix's graph is not a causal function of a whole-session pass (a later click adds nodes and edges seen
by earlier ones), so `forward` expands every training target into its own prefix graph, vectorised: the
targets are sorted by prefix length and taken in chunks (``graph_chunk`` targets, each chunk only as wide as
its longest prefix), each chunk building batched dense adjacency matrices with torch operations only.

Defaults: the authors' code (github.com/CRIPAC-DIG/SR-GNN, ``pytorch_code``): 100 hidden units, one GNN step,
the hybrid readout, every parameter uniform in +-1/sqrt(width), no dropout.

Deviations from the authors' code, each deliberate:

* no padding node: the code pads each batch's sequences with item 0, which then becomes a node of every
  padded graph (without edges, and masked out of the readout, so it changes nothing);
* AdamW with warm-up and decay, gradient clipping and the harness's decoupled weight decay on the matrices
  (the code: Adam at 0.001 with an L2 penalty of 1e-5 on every parameter, the rate divided by 10 every 3
  epochs, batches of 100 prefixes);
* sessions longer than ``max_len`` keep their most recent clicks (the code keeps whole prefixes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from hiersrec.bounds import check_bounds
from hiersrec.errors import ConfigError
from hiersrec.models._session_vector import SessionVectorModel

# Shapes: N prefixes, L the widest prefix of a chunk (<= max_len), D d_model, V items incl. PAD.


@dataclass(frozen=True)
class SRGNNConfig:
    """Hyperparameters of `SRGNN` (``n_items`` comes from the data); defaults: the authors' code."""

    n_items: int = 0  # V, including PAD at index 0 (set from the catalogue)
    max_len: int = 50  # longest prefix; longer sessions keep their most recent clicks
    d_model: int = 100  # width of the item embeddings and node vectors (the code's hiddenSize)
    n_steps: int = 1  # gated GNN propagation steps (the code's step)
    hybrid: bool = True  # session = W_3 [s_g; s_l]; False: the global interest s_g alone (the code's nonhybrid)
    graph_chunk: int = 1024  # prefixes whose graphs are built and propagated at once
    loss_chunk: int = 256  # rows per chunk of the full-softmax loss

    def __post_init__(self) -> None:
        bounds = {"n_items": (0, 1 << 31), "max_len": (1, 10_000), "d_model": (1, 1 << 16), "n_steps": (1, 64)}
        check_bounds(self, "model", {**bounds, "graph_chunk": (1, 1 << 24), "loss_chunk": (1, 1 << 20)})


@dataclass(frozen=True)
class SessionGraphs:
    """The graphs of N prefixes, as batched dense tensors (L = the widest prefix).

    Attributes:
        nodes: (N, L) item index of each node, ascending; 0 past a graph's nodes.
        click_nodes: (N, L) node of each click of the LEFT-ALIGNED prefix (0 past its end; masked by length).
        incoming: (N, L, L) row i: edge ``u -> i`` weighted 1 / in-degree(i), at column u.
        outgoing: (N, L, L) row i: edge ``i -> v`` weighted 1 / out-degree(i), at column v.
    """

    nodes: torch.Tensor
    click_nodes: torch.Tensor
    incoming: torch.Tensor
    outgoing: torch.Tensor


def session_graphs(prefixes: torch.Tensor, lengths: torch.Tensor) -> SessionGraphs:
    """The session graph of every LEFT-ALIGNED prefix row, built with batched tensor operations (no loop).

    Args:
        prefixes: (N, L) item indices, the real clicks first, then padding 0.
        lengths: (N,) clicks per prefix, 1..L.

    Example:
        >>> graphs = session_graphs(torch.tensor([[5, 7, 5, 9]]), torch.tensor([4]))
        >>> graphs.nodes[0, :3].tolist(), graphs.click_nodes[0].tolist()
        ([5, 7, 9], [0, 1, 0, 2])
        >>> graphs.outgoing[0, 0, :3].tolist()  # node 5 -> 7 and 5 -> 9
        [0.0, 0.5, 0.5]
    """
    n_rows, width = prefixes.shape
    columns = torch.arange(width, device=prefixes.device)
    real = columns[None, :] < lengths[:, None]
    past_every_item = torch.iinfo(prefixes.dtype).max
    ordered, order = torch.where(real, prefixes, past_every_item).sort(dim=1, stable=True)
    ordered_real = columns[None, :] < lengths[:, None]  # padding sorts last
    first_of_item = ordered_real & torch.cat(
        [torch.ones_like(ordered[:, :1], dtype=torch.bool), ordered[:, 1:] != ordered[:, :-1]], dim=1
    )
    rank = first_of_item.cumsum(dim=1) - 1  # (N, L) node of each sorted click
    # Padding goes to the last slot, which is never a node when a row has padding (nodes <= clicks < L).
    slot = torch.where(ordered_real, rank, width - 1)
    nodes = torch.zeros_like(prefixes).scatter_(1, slot, torch.where(ordered_real, ordered, 0))
    click_nodes = torch.zeros_like(prefixes).scatter_(1, order, slot).masked_fill(~real, 0)

    # Edges between consecutive clicks, each counted once (a flat index u * L + v per pair).
    is_edge = columns[None, 1:] < lengths[:, None]  # (N, L-1): click j -> click j + 1 exists
    flat = click_nodes[:, :-1] * width + click_nodes[:, 1:]
    adjacency = torch.zeros(n_rows, width * width, device=prefixes.device)
    adjacency.scatter_add_(1, flat, is_edge.float()).clamp_(max=1.0)
    adjacency = adjacency.view(n_rows, width, width)  # [u, v] = 1 for an edge u -> v
    in_degree = adjacency.sum(dim=1).clamp(min=1.0)  # (N, L) per v
    out_degree = adjacency.sum(dim=2).clamp(min=1.0)  # (N, L) per u
    incoming = (adjacency / in_degree[:, None, :]).transpose(1, 2)
    outgoing = adjacency / out_degree[:, :, None]
    return SessionGraphs(nodes, click_nodes, incoming, outgoing)


class GatedGraphCell(nn.Module):
    """One gated GNN step (Li et al. 2016, as SR-GNN uses it): messages in and out, then a GRU-like update."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.edge_in = nn.Linear(width, width)
        self.edge_out = nn.Linear(width, width)
        self.bias_in = nn.Parameter(torch.zeros(width))
        self.bias_out = nn.Parameter(torch.zeros(width))
        self.message_gates = nn.Linear(2 * width, 3 * width)  # reset | update | candidate, from the messages
        self.state_gates = nn.Linear(width, 3 * width)  # the same three, from the node's own vector

    def forward(self, graphs: SessionGraphs, hidden: torch.Tensor) -> torch.Tensor:
        """(N, L, D) node vectors -> (N, L, D) after one step."""
        message_in = graphs.incoming @ self.edge_in(hidden) + self.bias_in
        message_out = graphs.outgoing @ self.edge_out(hidden) + self.bias_out
        reset_m, update_m, candidate_m = self.message_gates(torch.cat([message_in, message_out], dim=2)).chunk(3, 2)
        reset_h, update_h, candidate_h = self.state_gates(hidden).chunk(3, 2)
        reset = torch.sigmoid(reset_m + reset_h)
        update = torch.sigmoid(update_m + update_h)
        candidate = torch.tanh(candidate_m + reset * candidate_h)
        return candidate + update * (hidden - candidate)


class SRGNN(SessionVectorModel):
    """Gated GNN over each prefix's session graph with an attention readout; registered as ``"srgnn"``.

    Example:
        >>> model = SRGNN.from_config(SRGNNConfig(d_model=16), catalog)  # doctest: +SKIP
        >>> model.score(batch)  # (B, V), PAD column -inf  # doctest: +SKIP
    """

    name: ClassVar[str] = "srgnn"
    label: ClassVar[str] = "SR-GNN"
    config_class: ClassVar[type] = SRGNNConfig

    def __init__(self, config: SRGNNConfig) -> None:
        super().__init__()
        if config.n_items < 2:
            raise ConfigError("SRGNNConfig needs n_items from the data: use SRGNN.from_config(config, catalog)")
        self.config = config
        width = config.d_model
        self.items = nn.Embedding(config.n_items, width, padding_idx=0)
        self.cell = GatedGraphCell(width)
        self.attention_last = nn.Linear(width, width)  # W_1 on the last click's node vector
        self.attention_click = nn.Linear(width, width)  # W_2 on every click's node vector
        self.attention_vector = nn.Linear(width, 1, bias=False)  # q
        self.combine = nn.Linear(2 * width, width)  # W_3 on [s_g; s_l]
        bound = 1.0 / math.sqrt(width)
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.uniform_(-bound, bound)
            self.items.weight[0].zero_()

    def _graph_vectors(self, prefixes: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # (N, D) session vectors of LEFT-ALIGNED prefixes of one chunk.
        graphs = session_graphs(prefixes, lengths)
        hidden = self.items(graphs.nodes)  # (N, L, D)
        for _ in range(self.config.n_steps):
            hidden = self.cell(graphs, hidden)
        clicks = hidden.gather(1, graphs.click_nodes[:, :, None].expand_as(hidden))  # (N, L, D)
        rows = torch.arange(prefixes.shape[0], device=prefixes.device)
        last = clicks[rows, lengths - 1]  # s_l
        weights = self.attention_vector(
            torch.sigmoid(self.attention_last(last)[:, None] + self.attention_click(clicks))
        )
        real = torch.arange(prefixes.shape[1], device=prefixes.device)[None, :] < lengths[:, None]
        global_interest = (weights * clicks * real[:, :, None]).sum(dim=1)  # s_g
        if not self.config.hybrid:
            return global_interest
        return self.combine(torch.cat([global_interest, last], dim=1))

    def _session_vectors(self, items: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """(N, D) session vectors of the prefixes ``items[rows, :positions + 1]`` of LEFT-ALIGNED rows.

        The prefixes are taken in order of length, ``graph_chunk`` at a time, each chunk as wide as its
        longest prefix; the vectors come back in the order of ``rows``.
        """
        lengths = positions + 1
        order = lengths.argsort(stable=True)
        vectors = []
        for chunk in order.split(self.config.graph_chunk):
            width = int(lengths[chunk].max())
            prefixes = items[rows[chunk], :width]
            inside = torch.arange(width, device=items.device)[None, :] < lengths[chunk, None]
            vectors.append(self._graph_vectors(prefixes.masked_fill(~inside, 0), lengths[chunk]))
        if not vectors:
            return self.items.weight.new_zeros((0, self.config.d_model))
        return torch.cat(vectors)[order.argsort()]
