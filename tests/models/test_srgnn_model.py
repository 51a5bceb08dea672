"""SR-GNN's own checks: the session graph of hand-made sessions, prefix graphs, a known answer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hiersrec.config import DataConfig, RunConfig, TrainConfig
from hiersrec.data.batching import left_pad, make_batch
from hiersrec.data.synthetic import SyntheticShopConfig, make_synthetic_shop
from hiersrec.eval.protocol import evaluate
from hiersrec.models.srgnn import SRGNN, SRGNNConfig, session_graphs
from hiersrec.train.run import TrainingData, fit_run


@pytest.fixture(scope="module")
def ring_shop():
    """Sessions that only walk their category's ring: the next item is a function of the current one."""
    config = SyntheticShopConfig(
        n_items=37, n_categories=5, n_groups=2, n_sessions=400, stay_prob=1.0, ring_prob=1.0, seed=5
    )
    return make_synthetic_shop(config)


def _sessions(shop):
    lengths = shop.train.lengths
    return [shop.train.session(int(np.flatnonzero(lengths == n)[0])) for n in (2, 3, 5, 8, 4)]


def _batch(sessions, catalog):
    items, lengths = left_pad(sessions, max(len(s) for s in sessions))
    return make_batch(items, lengths, catalog)


def _model(catalog, **options) -> SRGNN:
    torch.manual_seed(0)
    model = SRGNN.from_config(SRGNNConfig(d_model=16, max_len=7, **options), catalog)
    with torch.no_grad():  # non-trivial weights, so that equalities cannot pass by zeros
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return model.eval()


def test_the_graph_of_hand_made_sessions_is_the_one_worked_out_by_hand():
    # [5, 7, 5, 9]: nodes 5, 7, 9; edges 5->7, 7->5, 5->9. [3, 3, 2] (padded): nodes 2, 3; edges 3->3, 3->2.
    graphs = session_graphs(torch.tensor([[5, 7, 5, 9], [3, 3, 2, 0]]), torch.tensor([4, 3]))
    assert graphs.nodes.tolist() == [[5, 7, 9, 0], [2, 3, 0, 0]]
    assert graphs.click_nodes.tolist() == [[0, 1, 0, 2], [1, 1, 0, 0]]
    incoming = [  # row i: i's predecessors, over i's in-degree
        [[0, 1, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]],
        [[0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]],
    ]
    outgoing = [  # row i: i's successors, over i's out-degree
        [[0, 0.5, 0.5, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]],
        [[0, 0, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]],
    ]
    assert graphs.incoming.tolist() == incoming
    assert graphs.outgoing.tolist() == outgoing


def _graph_by_loops(session: list[int]) -> tuple[list[int], np.ndarray, np.ndarray]:
    nodes = sorted(set(session))
    edges = np.zeros((len(nodes), len(nodes)))
    for u, v in zip(session[:-1], session[1:], strict=True):
        edges[nodes.index(u), nodes.index(v)] = 1.0
    incoming = edges.T / np.maximum(edges.sum(axis=0), 1.0)[:, None]
    outgoing = edges / np.maximum(edges.sum(axis=1), 1.0)[:, None]
    return nodes, incoming, outgoing


def test_the_batched_graphs_equal_graphs_built_one_session_at_a_time():
    rng = np.random.default_rng(0)
    sessions = [list(rng.integers(1, 6, size=n)) for n in rng.integers(1, 9, size=40)]  # many repeats
    width = max(len(s) for s in sessions)
    prefixes = torch.tensor([s + [0] * (width - len(s)) for s in sessions])
    graphs = session_graphs(prefixes, torch.tensor([len(s) for s in sessions]))
    for row, session in enumerate(sessions):
        nodes, incoming, outgoing = _graph_by_loops(session)
        n = len(nodes)
        assert graphs.nodes[row, :n].tolist() == nodes and not graphs.nodes[row, n:].any()
        assert [nodes[i] for i in graphs.click_nodes[row, : len(session)].tolist()] == session
        np.testing.assert_allclose(graphs.incoming[row, :n, :n].numpy(), incoming)
        np.testing.assert_allclose(graphs.outgoing[row, :n, :n].numpy(), outgoing)
        assert not graphs.incoming[row, n:].any() and not graphs.incoming[row, :, n:].any()


@pytest.mark.parametrize("graph_chunk", [1024, 3])
def test_every_target_gets_its_own_prefix_graph(tiny_shop, graph_chunk):
    model = _model(tiny_shop.catalog, graph_chunk=graph_chunk)
    sessions = _sessions(tiny_shop)
    query, targets = model.encode_positions(_batch(sessions, tiny_shop.catalog))
    prefixes = [s[:j] for s in sessions for j in range(1, len(s))]  # the same cases, one row each
    assert torch.equal(targets, torch.from_numpy(np.concatenate([s[1:] for s in sessions])))
    torch.testing.assert_close(
        model.score(_batch(prefixes, tiny_shop.catalog)), model.score_query(query), rtol=1e-5, atol=1e-5
    )


def test_changing_a_later_click_never_changes_earlier_scores(tiny_shop):
    model = _model(tiny_shop.catalog)
    session = _sessions(tiny_shop)[3]  # 8 clicks
    changed = session.copy()
    changed[5] = 1 + (changed[5] % 30)
    for prefix in range(1, 6):
        before = model.score(_batch([session[:prefix]], tiny_shop.catalog))
        assert torch.equal(before, model.score(_batch([changed[:prefix]], tiny_shop.catalog)))
    assert not torch.equal(
        model.score(_batch([session[:7]], tiny_shop.catalog)), model.score(_batch([changed[:7]], tiny_shop.catalog))
    )


def test_the_readout_of_a_one_click_session_written_out(tiny_shop):
    # One node, no edge: both messages are the biases; s_g = a * v and s_l = v for the updated node vector v.
    model = _model(tiny_shop.catalog)
    cell = model.cell
    with torch.no_grad():
        h = model.items.weight[6]
        message = torch.cat([cell.bias_in, cell.bias_out])  # no neighbour: the biases only
        r_m, z_m, c_m = cell.message_gates(message).chunk(3)
        r_h, z_h, c_h = cell.state_gates(h).chunk(3)
        candidate = torch.tanh(c_m + torch.sigmoid(r_m + r_h) * c_h)
        v = candidate + torch.sigmoid(z_m + z_h) * (h - candidate)
        weight = model.attention_vector(torch.sigmoid(model.attention_last(v) + model.attention_click(v)))
        session = model.combine(torch.cat([weight * v, v]))
        expected = model.items.weight[1:] @ session
    scores = model.score(_batch([np.array([6])], tiny_shop.catalog))[0]
    torch.testing.assert_close(scores[1:], expected, rtol=1e-5, atol=1e-5)


def test_the_loss_is_the_softmax_over_all_items(tiny_shop):
    model = _model(tiny_shop.catalog)
    batch = _batch(_sessions(tiny_shop), tiny_shop.catalog)
    query, targets = model.encode_positions(batch)
    expected = F.cross_entropy((query.vectors @ model.items.weight.T)[:, 1:], targets - 1)
    out = model(batch)
    torch.testing.assert_close(out.loss, expected)
    assert out.category_loss.item() == 0.0 and out.loss.item() == out.item_loss.item()
    out.loss.backward()
    assert model.cell.edge_in.weight.grad.abs().sum() > 0


def test_it_learns_the_ring_successor(ring_shop, tmp_path):
    config = RunConfig(
        data=DataConfig(),
        model=SRGNNConfig(d_model=32, max_len=7),
        train=TrainConfig(epochs=10, batch_targets=256, lr=1e-2, warmup_steps=5, show_progress=False, device="cpu"),
    )
    artifact, result = fit_run(config, TrainingData.from_prepared(ring_shop), tmp_path / "run")
    report = evaluate(artifact.model, ring_shop.test, ring_shop.catalog, ks=[1, 5], max_len=7)
    assert report.metrics["hr@1"] > 0.95, report.metrics
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
