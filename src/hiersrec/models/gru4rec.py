"""GRU4Rec (Hidasi et al., ICLR 2016; Hidasi & Karatzoglou, CIKM 2018) as its authors' official PyTorch code has it.

A GRU reads the clicks of a session one by one; its state after a click scores every item by the inner
product with the item's output vector plus the item's output bias. The reference is the authors' own
re-implementation (github.com/hidasib/GRU4Rec_PyTorch_Official, ``gru4rec_pytorch.py``), and Hidasi & Czapp
(RecSys 2023) list what third-party ports get wrong; this file keeps every one of those features:

* **Losses**: cross-entropy over a softmax (the default) and BPR-max with a score-weighted regulariser
  (``bpr_reg``) over ELU (``elu_param`` > 0) or linear scores. BPR-max ranks the target against the other
  targets of the mini-batch plus ``n_sample`` extra items shared by the whole batch and drawn with probability
  ~ popularity ** ``sample_alpha``; the softmax weighting the negatives leaves out the target's own column
  only, exactly as the official code does. No "one random negative per example", no uniform sampling. The
  cross-entropy is the run's ``train.loss`` (`hiersrec.models.item_loss`: by default over all items); BPR-max
  is a sampled loss of its own, so with it ``train.loss`` stays "auto".
* **Input options**: ``constrained_embedding`` (the default, which the official code recommends for
  cross-entropy): the output item vectors are also the GRU's inputs; ``embedding = d``: a separate learned
  input table of width d; ``embedding = 0`` without constrained embedding: no embedding layer at all, the
  one-hot item feeds the first GRU layer, whose input weights are then an item table (the official
  ``GRUEmbedding`` layer, with its own gate equations: the reset gate scales the state *before* its matrix).
* **Output bias** per item (``By``), zero at the start, and the official initialisation: each gate block of
  every matrix uniform in +-sqrt(6 / (fan_in + fan_out)), biases 0 (the code's default "compatibility mode").
* **Dropout** on the input (``dropout_p_embed``; with one-hot input, on the first layer's output, as there)
  and on every GRU layer's output (``dropout_p_hidden``). As in the official code, the dropped-out output is
  also the state carried to the next click during training.
* **No extra layers**: no feed-forward layer between the GRU and the scores, no L2 penalty, tanh state.
* **Hidden state** zero at every session start; sessions never leak into each other.
* **Gradient through one step** (``truncated_bptt = True``): the official session-parallel training detaches
  the state after every step, so a click's loss trains the weights through that step only; the same happens
  here. Since no gradient crosses a step, the carried states are computed first without a graph (one fused
  GRU over the sequence when they are not dropped out), and then every step of every layer is recomputed from
  its carried input state in one batched call that takes the gradient: the same states and gradients as
  stepping click by click with a detached state, without a Python step per click in the backward pass.
  ``truncated_bptt = False`` backpropagates through the whole session instead (click by click).

Session-parallel mini-batches vs whole-session rows. The official loop advances ``batch_size`` sessions by one
click per step and takes an optimiser step each time. Here a training row is a whole session (the harness's
`hiersrec.train.batches.SessionWindows`) and the loss is taken at every position of it: for a causal RNN
whose state starts at zero for each session, the state at click t is the same function of clicks 1..t in both
schemes, so every (prefix, next click) case the official loop trains on is trained on here, once per epoch.
What differs is only when the weights move (see below).

Deviations from the official code, each deliberate:

* optimiser: the harness's AdamW with warm-up and decay and gradient clipping, one step per batch of about
  ``batch_targets`` targets taken at every position of whole sessions (official: Adagrad with optional
  Nesterov momentum, a step after every click of ``batch_size`` parallel sessions, so later clicks of a session
  are encoded by already-updated weights there);
* cross-entropy is the exact softmax over every item (official: over the mini-batch targets plus
  ``n_sample`` popularity samples, with an optional logQ correction, ``logq``, which only approximates the full
  softmax, so it has no equivalent here);
* BPR-max's in-batch negatives are the targets of all the positions of the batch (official: the
  ``batch_size`` targets of one step); the popularity it samples from is counted from the training targets
  seen so far (a buffer: the model is built from the catalogue, before any session is read), which after the
  first epoch is the training popularity of every click but the sessions' first, up to a constant;
* all GRU layers have the same width ``d_model`` (official: a list of widths, ``layers``);
* ``constrained_embedding`` together with ``embedding > 0`` is an error (the official code silently ignores
  ``embedding`` then);
* sessions longer than ``max_len`` keep their most recent clicks as everywhere in hiersrec (the official
  RNN carries the state over the whole session);
* dense tables and plain autograd (official: sparse embedding gradients and an indexed Adagrad).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from hiersrec.bounds import check_bounds
from hiersrec.data.batching import SessionBatch
from hiersrec.data.catalog import ItemCatalog
from hiersrec.errors import ConfigError, DataError
from hiersrec.models._transformer import NextClickCases, align_left
from hiersrec.models.base import ItemQuery, load_weights
from hiersrec.models.item_loss import ItemLoss

# Shapes: B batch, T positions, N training targets, D d_model, V items incl. PAD, S sampled negatives.

Loss = Literal["cross-entropy", "bpr-max"]


@dataclass(frozen=True)
class GRU4RecConfig:
    """Hyperparameters of `GRU4Rec` (``n_items`` comes from the data); defaults: the official class's."""

    n_items: int = 0  # V, including PAD at index 0 (set from the catalogue)
    max_len: int = 50  # longest context; longer sessions keep their most recent clicks
    d_model: int = 100  # width of every GRU layer (official ``layers = [100]``)
    n_layers: int = 1  # stacked GRU layers
    loss: Loss = "cross-entropy"  # "cross-entropy" (softmax over all items) or "bpr-max" (sampled negatives)
    embedding: int = 0  # > 0: a learned input item table of this width; 0: see constrained_embedding
    constrained_embedding: bool = True  # the output item vectors are the inputs too (needs embedding = 0);
    # False with embedding = 0: the one-hot item feeds the first GRU layer directly
    dropout_p_embed: float = 0.0  # dropout on the input vectors (one-hot input: on the first layer's output)
    dropout_p_hidden: float = 0.0  # dropout on the outputs of the GRU layers (also on the carried state)
    n_sample: int = 2048  # bpr-max: extra negatives per batch drawn by popularity, besides the batch's targets
    sample_alpha: float = 0.5  # bpr-max: sampling probability ~ popularity ** sample_alpha (0 = uniform)
    bpr_reg: float = 1.0  # bpr-max: weight of the softmax-weighted squared-score regulariser (official bpreg)
    elu_param: float = 0.5  # bpr-max: ELU(alpha) on the scores inside the loss; 0 = linear
    truncated_bptt: bool = True  # True: a click's loss reaches the weights through its own step (official)
    loss_chunk: int = 256  # rows per chunk of the full-softmax loss

    def __post_init__(self) -> None:
        bounds = {"n_items": (0, 1 << 31), "max_len": (1, 10_000), "d_model": (1, 1 << 16), "n_layers": (1, 64)}
        bounds |= {"embedding": (0, 1 << 16), "n_sample": (0, 1 << 20), "loss_chunk": (1, 1 << 20)}
        bounds |= {"dropout_p_embed": (0.0, 1.0), "dropout_p_hidden": (0.0, 1.0), "sample_alpha": (0.0, 1.0)}
        check_bounds(self, "model", {**bounds, "bpr_reg": (0.0, 1e3), "elu_param": (0.0, 1e3)})
        if self.loss not in ("cross-entropy", "bpr-max"):
            raise ConfigError(f"model.loss must be 'cross-entropy' or 'bpr-max', not {self.loss!r}")
        if self.constrained_embedding and self.embedding:
            raise ConfigError("model.constrained_embedding uses the output item vectors as inputs: set embedding = 0")
        for name in ("dropout_p_embed", "dropout_p_hidden"):
            if not getattr(self, name) < 1.0:
                raise ConfigError(f"model.{name} must be in [0, 1), got {getattr(self, name)}")

    @property
    def one_hot_input(self) -> bool:
        """True when the one-hot item feeds the first GRU layer (no embedding layer)."""
        return not self.constrained_embedding and self.embedding == 0


@dataclass
class GRU4RecOutput:
    """Training output (the training loop reads these names).

    Attributes:
        loss: the mean loss over the N targets (the same as ``item_loss``).
        item_loss: the cross-entropy (`ItemLoss`, ``train.loss``: by default over all items), or BPR-max over
            the sampled negatives.
        category_loss: 0 (GRU4Rec has no category task).
        item_query: (N, D + 1) GRU states at the target positions, with a 1 for the output bias.
        target_items: (N,) the next items.
    """

    loss: torch.Tensor
    item_loss: torch.Tensor
    category_loss: torch.Tensor
    item_query: torch.Tensor
    target_items: torch.Tensor


def _uniform_blocks_(weight: torch.Tensor, n_blocks: int, dim: int) -> None:
    # The official initialisation: each gate block on its own, uniform in +-sqrt(6 / (rows + columns)).
    with torch.no_grad():
        for block in weight.chunk(n_blocks, dim=dim):
            bound = math.sqrt(6.0 / (block.shape[0] + block.shape[1]))
            block.uniform_(-bound, bound)


class OneHotGRULayer(nn.Module):
    """A GRU layer fed by item indices: its input weights are an item table (the official ``GRUEmbedding``).

    ``r = sigmoid(W_r[i] + h U_r)``, ``z = sigmoid(W_z[i] + h U_z)``, ``c = tanh((r * h) U_c + W_c[i])`` and
    ``h' = (1 - z) h + z c``, with one bias on the input side.
    """

    def __init__(self, n_items: int, width: int) -> None:
        super().__init__()
        self.input_table = nn.Parameter(torch.empty(n_items, 3 * width))  # candidate | reset | update
        self.input_bias = nn.Parameter(torch.zeros(3 * width))
        self.gate_weights = nn.Parameter(torch.empty(width, 2 * width))  # reset | update, from the state
        self.candidate_weights = nn.Parameter(torch.empty(width, width))
        _uniform_blocks_(self.input_table, 3, dim=1)
        _uniform_blocks_(self.gate_weights, 2, dim=1)
        _uniform_blocks_(self.candidate_weights, 1, dim=1)

    def forward(self, items: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """(B,) item indices and (B, D) states -> (B, D) next states."""
        candidate_in, reset_in, update_in = (F.embedding(items, self.input_table) + self.input_bias).chunk(3, 1)
        reset_h, update_h = (hidden @ self.gate_weights).chunk(2, 1)
        reset = torch.sigmoid(reset_in + reset_h)
        update = torch.sigmoid(update_in + update_h)
        candidate = torch.tanh((reset * hidden) @ self.candidate_weights + candidate_in)
        return (1.0 - update) * hidden + update * candidate


class GRU4Rec(nn.Module):
    """GRU session recommender with the official GRU4Rec's options; registered as ``"gru4rec"``.

    Example:
        >>> model = GRU4Rec.from_config(GRU4RecConfig(d_model=16), catalog)  # doctest: +SKIP
        >>> model.score(batch)  # (B, V), PAD column -inf  # doctest: +SKIP
    """

    name: ClassVar[str] = "gru4rec"
    config_class: ClassVar[type] = GRU4RecConfig
    # Chosen on diginetica validation at 4 epochs (3e-2 led after 2 but fell behind; README, "Every model in one
    # harness").
    train_defaults: ClassVar[dict[str, Any]] = {"lr": 1e-2}
    item_loss: ItemLoss = ItemLoss()  # "cross-entropy": the training loop sets the run's (`hiersrec.train.loop`)

    def __init__(self, config: GRU4RecConfig) -> None:
        super().__init__()
        if config.n_items < 2:
            raise ConfigError("GRU4RecConfig needs n_items from the data: use GRU4Rec.from_config(config, catalog)")
        self.config = config
        width = config.d_model
        self.output_items = nn.Parameter(torch.empty(config.n_items, width))  # Wy; the inputs too if constrained
        self.output_bias = nn.Parameter(torch.zeros(config.n_items))  # By
        _uniform_blocks_(self.output_items, 1, dim=1)
        if config.embedding:
            self.input_items = nn.Parameter(torch.empty(config.n_items, config.embedding))
            _uniform_blocks_(self.input_items, 1, dim=1)
        self.one_hot_layer = OneHotGRULayer(config.n_items, width) if config.one_hot_input else None
        first_width = config.embedding or width
        n_cells = config.n_layers - int(config.one_hot_input)
        first_is_cell = not config.one_hot_input
        self.cells = nn.ModuleList(
            nn.GRUCell(first_width if (i == 0 and first_is_cell) else width, width) for i in range(n_cells)
        )
        for cell in self.cells:
            _uniform_blocks_(cell.weight_ih, 3, dim=0)
            _uniform_blocks_(cell.weight_hh, 3, dim=0)
            nn.init.zeros_(cell.bias_ih)
            nn.init.zeros_(cell.bias_hh)
        if config.loss == "bpr-max":
            # Clicks seen as training targets: the popularity that BPR-max's extra negatives are drawn from.
            self.register_buffer("target_counts", torch.zeros(config.n_items))

    @classmethod
    def from_config(
        cls, config: GRU4RecConfig, catalog: ItemCatalog, text_cache_dir: str | Path | None = None
    ) -> GRU4Rec:
        """A new model for ``catalog`` (``n_items`` is set from it; GRU4Rec reads no item metadata)."""
        return cls(replace(config, n_items=catalog.n_items + 1))

    @classmethod
    def from_state_dict(cls, config: GRU4RecConfig, state: Mapping[str, torch.Tensor]) -> GRU4Rec:
        """The saved model.

        Raises:
            ConfigError: the state dict does not fit ``config``.
        """
        return load_weights(lambda: cls(config), state)

    def output_table(self) -> torch.Tensor:
        """(V, D + 1) item output vectors with the output bias as the last column (row 0 is padding)."""
        return torch.cat([self.output_items, self.output_bias[:, None]], dim=1)

    def _states(self, items: torch.Tensor) -> torch.Tensor:
        # (B, T, D) top-layer states after each click of LEFT-ALIGNED rows (padding after the real clicks only
        # follows them, so it never reaches a real click's state).
        config = self.config
        inputs = None
        if not config.one_hot_input:
            table = self.input_items if config.embedding else self.output_items
            inputs = F.dropout(F.embedding(items, table), config.dropout_p_embed, self.training)  # (B, T, in)
        if torch.is_grad_enabled() and not config.truncated_bptt:
            return self._states_through_time(items, inputs)
        masks = self._state_dropout_masks(items.shape)
        with torch.no_grad():
            carried = self._carried_states(items, inputs, masks)
        if not torch.is_grad_enabled():
            return carried[-1]
        # Truncated BPTT: the state after click t is cell(input t, state t-1) with state t-1 a constant, so every
        # step of every layer takes its gradient at once from the carried states computed without one.
        batch, length = items.shape
        x = inputs
        for layer, previous in enumerate(carried):
            previous = F.pad(previous[:, :-1], (0, 0, 1, 0)).reshape(batch * length, -1)  # zero state at t = 0
            if layer == 0 and config.one_hot_input:
                state = self.one_hot_layer(items.reshape(-1), previous)
            else:
                state = self.cells[layer - int(config.one_hot_input)](x.reshape(batch * length, -1), previous)
            x = state.view(batch, length, -1)
            if masks[layer] is not None:
                x = x * masks[layer]
        return x

    def _state_dropout_masks(self, shape: torch.Size) -> list[torch.Tensor | None]:
        # One (B, T, D) scaled keep-mask per layer output (None: no dropout), the same for the carried states and
        # the states that take the gradient. The one-hot first layer's output is the input, dropped like one.
        masks: list[torch.Tensor | None] = []
        for layer in range(self.config.n_layers):
            rate = (
                self.config.dropout_p_embed
                if layer == 0 and self.config.one_hot_input
                else self.config.dropout_p_hidden
            )
            if not self.training or rate == 0.0:
                masks.append(None)
                continue
            keep = self.output_items.new_empty((*shape, self.config.d_model)).bernoulli_(1.0 - rate)
            masks.append(keep.div_(1.0 - rate))
        return masks

    def _carried_states(
        self, items: torch.Tensor, inputs: torch.Tensor | None, masks: list[torch.Tensor | None]
    ) -> list[torch.Tensor]:
        # (B, T, D) per layer: the (dropped-out) state after each click, as carried to the next click. A layer only
        # needs the whole sequence of the layer below, so layers run one after another; a GRUCell layer whose
        # states are not dropped runs as one fused GRU over the sequence.
        config = self.config
        batch, length = items.shape
        x, carried = inputs, []
        for layer in range(config.n_layers):
            one_hot = layer == 0 and config.one_hot_input
            cell = None if one_hot else self.cells[layer - int(config.one_hot_input)]
            if cell is not None and masks[layer] is None:
                weights = [cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh]
                initial = x.new_zeros((1, batch, config.d_model))
                x, _ = torch.gru(x, initial, weights, True, 1, 0.0, False, False, True)
            else:
                hidden, states = self.output_items.new_zeros((batch, config.d_model)), []
                for t in range(length):
                    hidden = self.one_hot_layer(items[:, t], hidden) if one_hot else cell(x[:, t], hidden)
                    if masks[layer] is not None:
                        hidden = hidden * masks[layer][:, t]
                    states.append(hidden)
                x = torch.stack(states, dim=1)
            carried.append(x)
        return carried

    def _states_through_time(self, items: torch.Tensor, inputs: torch.Tensor | None) -> torch.Tensor:
        # Full backpropagation through the session: one click at a time, every state keeps its graph.
        config, training = self.config, self.training
        batch, length = items.shape
        hidden = [self.output_items.new_zeros((batch, config.d_model)) for _ in range(config.n_layers)]
        outputs = []
        for t in range(length):
            if config.one_hot_input:
                x = F.dropout(self.one_hot_layer(items[:, t], hidden[0]), config.dropout_p_embed, training)
                hidden[0] = x
            else:
                x = inputs[:, t]
            first = int(config.one_hot_input)
            for layer, cell in enumerate(self.cells, start=first):
                x = F.dropout(cell(x, hidden[layer]), config.dropout_p_hidden, training)
                hidden[layer] = x  # the dropped-out output is the carried state, as in the official code
            outputs.append(x)
        return torch.stack(outputs, dim=1)

    def encode_positions(
        self, batch: SessionBatch, target_mask: torch.Tensor | None = None
    ) -> tuple[ItemQuery, torch.Tensor]:
        """Queries at every target position of whole LEFT-padded sessions, and the (N,) targets, row by row."""
        cases = NextClickCases.of(batch, self.config.max_len, target_mask)
        states = self._states(align_left(cases.inputs, cases.input_lengths))  # (B, T-1, D)
        return self._query(states[cases.selected]), cases.targets

    def _query(self, states: torch.Tensor) -> ItemQuery:
        with_bias = torch.cat([states, states.new_ones((states.shape[0], 1))], dim=1)
        return ItemQuery(vectors=with_bias, category_logits=states.new_zeros((states.shape[0], 0)))

    def forward(self, batch: SessionBatch, target_mask: torch.Tensor | None = None) -> GRU4RecOutput:
        """The loss at every target position of whole sessions (see `encode_positions`)."""
        query, targets = self.encode_positions(batch, target_mask)
        if self.config.loss == "cross-entropy":
            total = self.item_loss(query.vectors, self.output_table(), targets, chunk_size=self.config.loss_chunk)
        else:
            with torch.autocast(targets.device.type, enabled=False):  # float32 under bf16, like the other losses
                total = self._bpr_max_sum(query.vectors.float(), targets)
        loss = total / max(targets.numel(), 1)
        return GRU4RecOutput(loss, loss, torch.zeros_like(loss), query.vectors, targets)

    def _negative_samples(self, targets: torch.Tensor) -> torch.Tensor:
        # (S,) extra negatives shared by the batch, drawn with probability ~ popularity ** sample_alpha.
        counts = torch.bincount(targets, minlength=self.config.n_items).to(self.target_counts.dtype)
        if self.training:
            self.target_counts += counts
            counts = self.target_counts
        else:
            counts = self.target_counts + counts
        weights = torch.where(counts > 0, counts.pow(self.config.sample_alpha), torch.zeros_like(counts))
        return torch.multinomial(weights, self.config.n_sample, replacement=True)

    def _bpr_max_sum(self, query: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # Summed BPR-max over the rows: the targets of the batch and the samples are every row's negatives.
        n_rows = targets.numel()
        columns = targets
        if self.config.n_sample:
            columns = torch.cat([targets, self._negative_samples(targets)])
        scores = query @ self.output_table()[columns].T  # (N, N + S); column n is row n's target
        return bpr_max_sum(scores, self.config.bpr_reg, self.config.elu_param) if n_rows else scores.sum()

    @torch.no_grad()
    def query(self, batch: SessionBatch) -> ItemQuery:
        """The query at the last real click of each LEFT-padded session (no dropout).

        Raises:
            DataError: a session has no click.
        """
        items, lengths = batch.items[:, -self.config.max_len :], batch.lengths.clamp(max=self.config.max_len)
        if (lengths < 1).any():
            raise DataError("cannot score an empty session: every row needs at least one known click")
        states = self._states(align_left(items, lengths))
        return self._query(states[torch.arange(states.shape[0], device=states.device), lengths - 1].float())

    @torch.no_grad()
    def score_query(self, query: ItemQuery) -> torch.Tensor:
        """(B, V) float32 scores ``h . Wy_i + By_i``; column 0 (PAD) = -inf."""
        scores = query.vectors.float() @ self.output_table().detach().float().T
        scores[:, 0] = float("-inf")
        return scores

    @torch.no_grad()
    def score(self, batch: SessionBatch) -> torch.Tensor:
        """(B, V) float32 next-item scores, column 0 (PAD) = -inf."""
        return self.score_query(self.query(batch))

    def candidate_support(self) -> str:
        """Why GRU4Rec cannot rank category candidates."""
        return "GRU4Rec has no category head: it can only rank every item"

    def describe(self) -> dict[str, Any]:
        """Name and hyperparameters, for reports."""
        return {"name": self.name, **asdict(self.config)}


def bpr_max_sum(scores: torch.Tensor, regularisation: float, elu_param: float) -> torch.Tensor:
    """Summed BPR-max loss (Hidasi & Karatzoglou 2018) of rows whose target score is on the diagonal.

    ``-log sum_j s_j sigmoid(r_target - r_j) + regularisation * sum_j s_j r_j**2``, with ``s`` the softmax of
    the scores over the row's negatives (every column but the row's own target column, as in the official
    code: another column holding the same item stays a negative).

    Args:
        scores: (N, M) scores, M >= N; column n of row n is its target.
        regularisation: weight of the score regulariser (official ``bpreg``).
        elu_param: ELU(alpha) applied to the scores first; 0 keeps them linear.
    """
    if elu_param > 0:
        scores = F.elu(scores, elu_param)
    n_rows = scores.shape[0]
    own = torch.eye(n_rows, scores.shape[1], dtype=torch.bool, device=scores.device)
    weights = scores.masked_fill(own, float("-inf")).softmax(dim=1)  # 0 at the target's own column
    target = scores.diagonal()[:, None]
    ranking = (torch.sigmoid(target - scores) * weights).sum(dim=1)
    penalty = (scores.square() * weights).sum(dim=1)
    return (-torch.log(ranking + 1e-24) + regularisation * penalty).sum()
