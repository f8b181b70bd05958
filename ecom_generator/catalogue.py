"""The product catalogue: a lifetime pool of products and its daily full snapshots.

About 90 % of the products are listed before the run starts; the rest launch during it.
Every day a product may change price (about 1.2 % a day, by a log-normal factor, kept at
``.99`` price points), go out of stock (``is_active`` false) and come back, or be delisted
for good (a hazard of 0.2 % a day), after which it is missing from later snapshots.
Popularity is log-normal, so a few products draw most views and sales.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ecom_generator import _vocab
from ecom_generator._strings import (
    TS_UTC,
    decimal_text,
    format_timestamps,
    hash_keys,
    json_escape,
    json_objects,
    json_raw_field,
    json_string_field,
    padded_ids,
    pick,
    scatter,
)
from ecom_generator.seasonality import DeliveryCalendar

#: Product ids at or above this number are never assigned (the ``unknown_product`` defect uses them).
UNKNOWN_PRODUCT_BASE = 900_000
PRICE_CHANGE_SHARE = 0.012
OUT_OF_STOCK_SHARE = 0.01
BACK_IN_STOCK_SHARE = 0.25
DELIST_HAZARD = 0.002
PRE_LISTED_SHARE = 0.9

_LEAVES: tuple[tuple[str, str, str], ...] = tuple(
    (root, level2, leaf)
    for root, children in _vocab.CATEGORY_TREE.items()
    for level2, leaves in children.items()
    for leaf in leaves
)
_ROOTS: tuple[str, ...] = tuple(_vocab.CATEGORY_TREE)


@dataclass
class Catalogue:
    """Mutable catalogue state; one instance lives through the whole run.

    Attributes:
        product_ids: ``P000001``... per product.
        leaf: Index into the category leaves per product.
        brand: Brand per product, an index unique across root categories.
        popularity: Relative view/purchase weight per product.
        listed_day: First day the product is in a snapshot (``-1``: before the run).
        delisted_day: First day it is missing again (``days`` or more: never during the run).
        price_cents: Current list price in EUR cents.
        is_active: Current availability.
        updated_ms: Last change of the product record (UTC ms).
    """

    product_ids: pa.StringArray
    leaf: np.ndarray
    brand: np.ndarray
    popularity: np.ndarray
    listed_day: np.ndarray
    delisted_day: np.ndarray
    price_cents: np.ndarray
    is_active: np.ndarray
    updated_ms: np.ndarray
    static_json: pa.Array
    attributes_json: pa.Array
    search_terms: pa.Array
    category_urls: pa.Array

    @property
    def size(self) -> int:
        """Products in the lifetime pool."""
        return len(self.leaf)

    def listed(self, day_index: int) -> np.ndarray:
        """Mask of products in the snapshot of a day."""
        return (self.listed_day <= day_index) & (self.delisted_day > day_index)

    def sellable(self, day_index: int) -> np.ndarray:
        """Indices of products that can be viewed and bought on a day (listed and active)."""
        return np.flatnonzero(self.listed(day_index) & self.is_active)

    def advance(self, rng: np.random.Generator, calendar: DeliveryCalendar, day_index: int) -> None:
        """Apply one day of listings, price changes and stock changes (before the day's trade).

        Changes take effect in the early morning (00:00-06:00 local), so the day's snapshot
        and the day's orders both see the new state.
        """
        day_start = calendar.start_ms(day_index)
        listed = self.listed(day_index)
        launched = self.listed_day == day_index
        existing = listed & ~launched
        repriced = existing & (rng.random(self.size) < PRICE_CHANGE_SHARE)
        factor = np.clip(rng.lognormal(-0.02, 0.12, size=self.size), 0.6, 1.4)
        new_price = np.maximum(99, np.round(self.price_cents * factor / 100) * 100 - 1).astype(np.int64)
        self.price_cents = np.where(repriced, new_price, self.price_cents)
        toggle = rng.random(self.size)
        goes_out = existing & self.is_active & (toggle < OUT_OF_STOCK_SHARE)
        comes_back = existing & ~self.is_active & (toggle < BACK_IN_STOCK_SHARE)
        self.is_active = np.where(goes_out | comes_back, ~self.is_active, self.is_active)
        changed = launched | repriced | goes_out | comes_back
        change_ms = day_start + rng.integers(0, 6 * 3_600_000, size=self.size)
        self.updated_ms = np.where(changed, change_ms, self.updated_ms)

    def snapshot_lines(self, day_index: int) -> pa.Array:
        """The JSON Lines (one object per listed product, no newline) of the day's snapshot."""
        rows = np.flatnonzero(self.listed(day_index))
        take = pa.array(rows)
        active_text = pick(["false", "true"], self.is_active[rows].astype(np.int64))
        fields = [
            self.static_json.take(take),
            json_raw_field("price", decimal_text(self.price_cents[rows])),
            pa.array(['"currency":"EUR"'] * len(rows), pa.string()),
            json_raw_field("is_active", active_text),
            json_string_field("updated_at", format_timestamps(self.updated_ms[rows], TS_UTC, millis=False)),
            json_raw_field("attributes", self.attributes_json.take(take)),
        ]
        return json_objects(fields)


def _attributes(keys: np.ndarray, roots: np.ndarray) -> pa.Array:
    """Free-form ``attributes`` objects whose keys depend on the root category."""
    size = len(keys)
    draw = [(hash_keys(91 + k, keys) % np.uint64(1 << 30)).astype(np.int64) for k in range(4)]

    def text(values: np.ndarray) -> pa.Array:
        return pa.array(values).cast(pa.string())

    color = json_string_field("color", pick(list(_vocab.COLORS), draw[0] % len(_vocab.COLORS)))
    material = json_string_field("material", pick(list(_vocab.MATERIALS), draw[1] % len(_vocab.MATERIALS)))
    weight = json_raw_field("weight_g", text(50 + draw[2] % 4000))
    flag = pick(["false", "true"], draw[3] % 2)
    by_root = {
        "Electronics": [color, json_raw_field("warranty_years", text(1 + draw[1] % 3)), weight],
        "Fashion": [
            color,
            json_string_field("size", pick(list(_vocab.SIZES), draw[2] % len(_vocab.SIZES))),
            material,
        ],
        "Home & Garden": [color, material, weight],
        "Sports & Outdoors": [color, weight, json_raw_field("waterproof", flag)],
        "Beauty": [json_raw_field("volume_ml", text(15 + (draw[2] % 50) * 5)), json_raw_field("vegan", flag)],
        "Books & Media": [
            json_string_field("language", pick(list(_vocab.LANGUAGES), draw[0] % 6)),
            json_raw_field("min_age", text(draw[1] % 16)),
        ],
        "Toys": [
            json_raw_field("min_age", text(1 + draw[1] % 12)),
            json_raw_field("pieces", text(1 + draw[2] % 900)),
        ],
    }
    parts = []
    for root_index, root in enumerate(_ROOTS):
        rows = np.flatnonzero(roots == root_index)
        fields = [field.take(pa.array(rows)) for field in by_root[root]]
        parts.append((rows, json_objects(fields)))
    return scatter(size, parts, pa.string())


def build_catalogue(rng: np.random.Generator, calendar: DeliveryCalendar, products: int) -> Catalogue:
    """Create the lifetime product pool of a run.

    Args:
        rng: Random stream of the catalogue.
        calendar: The run's days.
        products: Products ever listed during the run (< 900,000).

    Returns:
        The catalogue in its state before the first day.
    """
    if products >= UNKNOWN_PRODUCT_BASE:
        raise ValueError(f"at most {UNKNOWN_PRODUCT_BASE - 1} products are supported, got {products}")
    days = calendar.days
    leaf = rng.integers(0, len(_LEAVES), size=products)
    root_of_leaf = np.array([_ROOTS.index(root) for root, _, _ in _LEAVES])
    roots = root_of_leaf[leaf]
    numbers = np.arange(1, products + 1)
    keys = hash_keys(7, numbers)

    low = np.array([np.log(_vocab.ROOT_PRICE_EUR[root][0]) for root in _ROOTS])[roots]
    high = np.array([np.log(_vocab.ROOT_PRICE_EUR[root][1]) for root in _ROOTS])[roots]
    euros = np.exp(low + (high - low) * rng.beta(1.3, 2.6, size=products))
    price_cents = np.maximum(99, np.round(euros) * 100 - 1).astype(np.int64)

    pre_listed = rng.random(products) < PRE_LISTED_SHARE
    if days > 1:
        listed_day = np.where(pre_listed, -1, rng.integers(1, days, size=products))
    else:
        listed_day = np.full(products, -1)
    lifetime = rng.geometric(DELIST_HAZARD, size=products)
    delisted_day = np.maximum(listed_day, 0) + lifetime
    popularity = rng.lognormal(0.0, 1.1, size=products) * np.where(pre_listed, 1.0, 1.5)
    first_ms = calendar.start_ms(0)
    updated_ms = first_ms - rng.integers(3_600_000, 365 * 86_400_000, size=products)

    brand_pools = {root: list(_vocab.BRANDS[root]) for root in _ROOTS}
    brand_index = (keys % np.uint64(64)).astype(np.int64)
    pool_size = np.array([len(brand_pools[root]) for root in _ROOTS])
    pool_start = np.concatenate([[0], np.cumsum(pool_size)[:-1]])
    brand_number = pool_start[roots] + brand_index % pool_size[roots]
    brand = scatter(
        products,
        [
            (rows, pick(brand_pools[root], brand_index[rows] % len(brand_pools[root])))
            for root_index, root in enumerate(_ROOTS)
            if len(rows := np.flatnonzero(roots == root_index))
        ],
        pa.string(),
    )
    leaf_names = pick([name for _, _, name in _LEAVES], leaf)
    line = pick(list(_vocab.PRODUCT_LINES), (keys >> np.uint64(8)) % np.uint64(len(_vocab.PRODUCT_LINES)))
    model = pc.binary_join_element_wise(
        pick(list("ABCDEFGHKMRSTVXZ"), (keys >> np.uint64(16)) % np.uint64(16)),
        pa.array(((keys >> np.uint64(24)) % np.uint64(990) + np.uint64(10)).astype(np.int64)).cast(
            pa.string()
        ),
        "",
    )
    name = pc.binary_join_element_wise(brand, line, leaf_names, model, " ")
    product_ids = padded_ids("P", numbers, 6)
    sku = pc.binary_join_element_wise(
        pick([root[:2].upper() for root in _ROOTS], roots), padded_ids("", numbers * 7 + 100_000, 7), "-"
    )
    path_json = pick(['["' + '","'.join(path) + '"]' for path in _LEAVES], leaf)
    static_json = pc.binary_join_element_wise(
        json_string_field("product_id", product_ids),
        json_string_field("sku", sku),
        json_string_field("name", json_escape(name)),
        json_string_field("brand", json_escape(brand)),
        json_raw_field("category_path", path_json),
        ",",
    )
    lower_leaf = pc.utf8_lower(leaf_names)
    with_brand = (keys >> np.uint64(40)) % np.uint64(3) == 0
    search_terms = pc.if_else(
        pa.array(with_brand), pc.binary_join_element_wise(pc.utf8_lower(brand), lower_leaf, " "), lower_leaf
    )
    category_urls = pick(["/c/" + "/".join(_vocab.url_slug(part) for part in path) for path in _LEAVES], leaf)
    return Catalogue(
        product_ids=product_ids,
        leaf=leaf,
        brand=brand_number,
        popularity=popularity,
        listed_day=listed_day,
        delisted_day=delisted_day,
        price_cents=price_cents,
        is_active=np.ones(products, dtype=bool),
        updated_ms=updated_ms,
        static_json=static_json,
        attributes_json=_attributes(keys, roots),
        search_terms=search_terms,
        category_urls=category_urls,
    )


def sample_products(
    rng: np.random.Generator, catalogue: Catalogue, candidates: np.ndarray, size: int
) -> np.ndarray:
    """Draw products among ``candidates`` in proportion to their popularity.

    Returns:
        Product indices (empty when there are no candidates).
    """
    if len(candidates) == 0 or size == 0:
        return np.zeros(0 if len(candidates) == 0 else size, dtype=np.int64)
    cumulative = np.cumsum(catalogue.popularity[candidates])
    draws = rng.random(size) * cumulative[-1]
    return candidates[np.minimum(np.searchsorted(cumulative, draws, side="right"), len(candidates) - 1)]
