"""The chunked full-softmax cross-entropy equals the reference loss and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hiersrec.models._chunked_softmax import softmax_cross_entropy_sum


def reference(query, table, targets, bias=0.0):
    logits = query @ table.T + bias
    return F.cross_entropy(logits[:, 1:], targets - 1, reduction="sum")  # PAD column excluded


@pytest.mark.parametrize("chunk_size", [1, 4, 7, 100])
def test_loss_and_gradients_equal_the_reference(chunk_size):
    torch.manual_seed(0)
    query, table = torch.randn(11, 5, requires_grad=True), torch.randn(37, 5, requires_grad=True)
    targets = torch.randint(1, 37, (11,))
    (2.5 * softmax_cross_entropy_sum(query, table, targets, chunk_size=chunk_size)).backward()
    grads = query.grad.clone(), table.grad.clone()
    query.grad = table.grad = None
    expected = reference(query, table, targets)
    (2.5 * expected).backward()
    torch.testing.assert_close(softmax_cross_entropy_sum(query, table, targets, chunk_size=chunk_size), expected)
    torch.testing.assert_close(grads[0], query.grad)
    torch.testing.assert_close(grads[1], table.grad)


def test_grouped_softmax_runs_over_the_target_group_only():
    torch.manual_seed(1)
    query, table = torch.randn(6, 4), torch.randn(9, 4)
    item_groups = torch.tensor([0, 1, 1, 1, 2, 2, 3, 3, 3])
    targets = torch.tensor([2, 5, 7, 3, 4, 8])
    loss = softmax_cross_entropy_sum(
        query, table, targets, target_groups=item_groups[targets], item_groups=item_groups, chunk_size=4
    )
    logits = query @ table.T
    expected = 0.0
    for row, target in enumerate(targets.tolist()):
        members = (item_groups == item_groups[target]).nonzero().squeeze(1)
        expected -= logits[row, target] - torch.logsumexp(logits[row, members], dim=0)
    torch.testing.assert_close(loss, expected)


def test_bfloat16_compute_is_close_to_float32():
    torch.manual_seed(2)
    query, table = torch.randn(64, 16), torch.randn(500, 16) * 0.3
    targets = torch.randint(1, 500, (64,))
    exact = softmax_cross_entropy_sum(query, table, targets)
    approx = softmax_cross_entropy_sum(query, table, targets, compute_dtype=torch.bfloat16)
    torch.testing.assert_close(approx, exact, rtol=2e-2, atol=0)


def test_group_bias_adds_to_every_item_of_the_group_and_gets_its_gradient():
    torch.manual_seed(3)
    query, table = torch.randn(6, 4, requires_grad=True), torch.randn(9, 4, requires_grad=True)
    item_groups = torch.tensor([0, 1, 1, 1, 2, 2, 3, 3, 3])
    bias = torch.randn(6, 4, requires_grad=True)
    targets = torch.tensor([2, 5, 7, 3, 4, 8])
    softmax_cross_entropy_sum(query, table, targets, item_groups=item_groups, group_bias=bias, chunk_size=4).backward()
    grads = [t.grad.clone() for t in (query, table, bias)]
    for t in (query, table, bias):
        t.grad = None
    reference(query, table, targets, bias[:, item_groups]).backward()
    for got, t in zip(grads, (query, table, bias), strict=True):
        torch.testing.assert_close(got, t.grad)
