"""Where a discriminator's representation lives: its conv blocks' features alone and cumulatively.

A discriminator's feature store holds its blocks' pooled maps side by side, in block order
(:func:`~gan_features.representations.discriminator.pool_blocks`), so every block, and every run of
blocks 1..k, is a range of consecutive columns. :func:`block_sets` lists those ranges for a store
and :func:`block_view` reads one as a store of its own (:meth:`FeatureStore.columns`): the
protocols and the k-NN probe measure it without extracting or writing anything again::

    with FeatureStore("train.h5") as train, FeatureStore("test.h5") as test:
        for blocks in block_sets(train):
            result = get_protocol("cifar10-400").run(block_view(train, blocks), block_view(test, blocks))
            print(blocks.name, result.test.mean)

Blocks are numbered from 1 (the input side) in names and tables, as the paper's "layers" are;
``layers`` holds the 0-based indices that ``--layers`` and ``@layers=`` take.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import GanFeaturesError
from .models import ARCHITECTURES
from .store import FeatureStore


@dataclass(frozen=True)
class BlockSet:
    """Some conv blocks of a store's discriminator and the columns their features fill.

    ``alone``: a single block (block 1 alone is also the first cumulative set); ``cumulative``: the
    store's first k blocks.
    """

    layers: tuple[int, ...]  # 0-based block indices, increasing
    columns: slice
    alone: bool
    cumulative: bool
    units: int  # the most feature maps of one of its blocks, as Table 1 counts feature units

    @property
    def name(self) -> str:
        first, last = self.layers[0] + 1, self.layers[-1] + 1
        return f"block {first}" if first == last else f"blocks {first}-{last}"

    @property
    def dimension(self) -> int:
        return self.columns.stop - self.columns.start


def store_blocks(store: FeatureStore) -> list[tuple[int, slice, int]]:
    """(block index, columns, channels) of each conv block whose features ``store`` holds, in column order.

    Read from the store's own record: its architecture (a registered one) and feature spec (the
    blocks it kept, the pooling grid); refused in one line when they do not add up to its width.
    """
    name, spec = store.attrs.get("architecture"), store.attrs.get("feature_spec")
    if name not in ARCHITECTURES or not isinstance(spec, dict) or "grid" not in spec:
        raise GanFeaturesError(f"{store.path} does not hold discriminator features of a registered architecture "
                               f"(architecture {name!r}): only those are made of conv blocks")
    channels = ARCHITECTURES[name].feature_channels
    layers = spec.get("layers")
    layers = tuple(range(len(channels))) if layers is None else tuple(int(i) for i in layers)
    if not layers or not all(0 <= i < len(channels) for i in layers):
        raise GanFeaturesError(f"{store.path}: its feature spec names blocks {list(layers)}, but {name} has blocks "
                               f"0..{len(channels) - 1}")
    blocks, start = [], 0
    for index in layers:
        width = channels[index] * int(spec["grid"]) ** 2
        blocks.append((index, slice(start, start + width), channels[index]))
        start += width
    if start != store.dimension:
        raise GanFeaturesError(f"{store.path} holds {store.dimension} features per row, but blocks {list(layers)} of "
                               f"{name} pooled to {spec['grid']}x{spec['grid']} make {start}: re-extract it")
    return blocks


def block_sets(store: FeatureStore) -> list[BlockSet]:
    """Each block of ``store`` alone, then blocks 1..k for k = 2 .. all (block 1 alone is the first of both)."""
    blocks = store_blocks(store)
    sets = [BlockSet((index,), columns, alone=True, cumulative=position == 0, units=units)
            for position, (index, columns, units) in enumerate(blocks)]
    for k in range(2, len(blocks) + 1):
        first = blocks[:k]
        sets.append(BlockSet(tuple(index for index, _, _ in first), slice(0, first[-1][1].stop), alone=False,
                             cumulative=True, units=max(units for _, _, units in first)))
    return sets


def block_view(store: FeatureStore, blocks: BlockSet) -> FeatureStore:
    """``store``'s columns of ``blocks``, read as a store whose feature spec names just those blocks."""
    spec = {**store.attrs["feature_spec"], "layers": list(blocks.layers)}
    return store.columns(blocks.columns, feature_spec=spec)
