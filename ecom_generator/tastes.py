"""Customers' tastes: favourite categories and brands that drift slowly, staples, and bundles.

Without tastes every visitor draws products from the same popularity-weighted catalogue, so
nothing about a customer predicts what they buy next. With them:

* every registered customer has two favourite second-level categories (drawn in proportion
  to the categories' popularity, so the shop's overall mix stays the same) and a favourite
  brand; :data:`TASTE_SHARE` of the products they look at (and so put in the cart and buy)
  come from a favourite category, the favourite brand weighing :data:`BRAND_BOOST` times
  its popularity there;
* tastes drift slowly: each day :data:`DRIFT_SHARE` of the customers take a new second
  favourite (which sometimes becomes the first) and sometimes a new brand;
* :data:`REPEAT_BUYER_SHARE` of the customers are repeat buyers with :data:`STAPLES` staple
  products of their favourite category, which :data:`STAPLE_SHARE` of their product events show;
* :data:`BUNDLE_PRODUCT_SHARE` of the products form pairs sold as bundles: after looking at
  one, a visitor (anonymous too) looks at its partner next with probability
  :data:`BUNDLE_SHARE`, so the two end up in the same cart and order.

Tastes use random streams of their own, so the rest of the simulation (sessions, funnel,
orders, defects) draws exactly the numbers it drew before: the shop keeps its aggregate
shape; only which products are viewed and bought changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ecom_generator import _vocab
from ecom_generator.catalogue import Catalogue

TASTE_SHARE = 0.65
SECONDARY_SHARE = 0.35
BRAND_BOOST = 4.0
DRIFT_SHARE = 0.01
PROMOTE_ON_DRIFT = 0.3
BRAND_CHANGE_ON_DRIFT = 0.3
REPEAT_BUYER_SHARE = 0.15
STAPLES = 2
STAPLE_SHARE = 0.2
BUNDLE_PRODUCT_SHARE = 0.2
BUNDLE_SHARE = 0.5

_LEVEL2: tuple[tuple[str, str], ...] = tuple(
    (root, level2) for root, children in _vocab.CATEGORY_TREE.items() for level2 in children
)
#: The second-level category of each leaf (leaves in the order of the catalogue's ``_LEAVES``).
LEAF_LEVEL2 = np.array(
    [
        _LEVEL2.index((root, level2))
        for root, children in _vocab.CATEGORY_TREE.items()
        for level2, leaves in children.items()
        for _ in leaves
    ]
)


@dataclass
class Tastes:
    """What each customer likes and which products are bundles (mutable: tastes drift).

    Attributes:
        favourite: ``(customers, 2)`` second-level category indices, first and second favourite.
        brand: Favourite brand per customer (the catalogue's brand index).
        staples: ``(customers, STAPLES)`` product indices of repeat buyers; -1 for the others.
        partner: Bundle partner per product; -1 for products without one.
    """

    favourite: np.ndarray
    brand: np.ndarray
    staples: np.ndarray
    partner: np.ndarray

    def drift(self, rng: np.random.Generator, catalogue: Catalogue) -> None:
        """One day of drift: a few customers take a new second favourite, some a new brand."""
        customers = len(self.brand)
        moving = np.flatnonzero(rng.random(customers) < DRIFT_SHARE)
        promote = rng.random(len(moving)) < PROMOTE_ON_DRIFT
        new_brand = rng.random(len(moving)) < BRAND_CHANGE_ON_DRIFT
        fresh = _draw_categories(rng, catalogue, len(moving))
        old_first, old_second = self.favourite[moving, 0], self.favourite[moving, 1]
        first = np.where(promote, old_second, old_first)
        other = np.where(promote, old_first, old_second)
        self.favourite[moving, 0] = first
        self.favourite[moving, 1] = np.where(fresh == first, other, fresh)
        brands = _draw_brands(rng, catalogue, self.favourite[moving, 0])
        self.brand[moving] = np.where(new_brand & (brands >= 0), brands, self.brand[moving])

    def personalise(
        self,
        rng: np.random.Generator,
        catalogue: Catalogue,
        sellable: np.ndarray,
        *,
        product: np.ndarray,
        customer: np.ndarray,
        previous: np.ndarray | None = None,
    ) -> np.ndarray:
        """Redraw products by taste, staples and bundles.

        Args:
            rng: The tastes' own random stream of the batch.
            catalogue: The catalogue (categories, brands, popularity).
            sellable: Indices of the products that can be viewed and bought now.
            product: The products drawn from overall popularity, one per event or line.
            customer: The customer of each (-1: anonymous, keeps the overall draw).
            previous: Index of the event before each one in the same session (-1: the first);
                None for order lines, which get no bundles.

        Returns:
            The products, some replaced: by a favourite category's product (registered
            customers), a staple (repeat buyers), or the bundle partner of the product before.
        """
        size = len(product)
        result = product.copy()
        known = customer >= 0
        safe = np.maximum(customer, 0)
        by_taste = known & (rng.random(size) < TASTE_SHARE)
        second = rng.random(size) < SECONDARY_SHARE
        category = np.where(second, self.favourite[safe, 1], self.favourite[safe, 0])
        uniform = rng.random(size)
        drawn = _draw_by_taste(catalogue, sellable, category, self.brand[safe], uniform, by_taste)
        result = np.where(drawn >= 0, drawn, result)
        staple = self.staples[safe, rng.integers(0, STAPLES, size=size)]
        is_sellable = np.zeros(catalogue.size, dtype=bool)
        is_sellable[sellable] = True
        shows_staple = known & (staple >= 0) & (rng.random(size) < STAPLE_SHARE)
        shows_staple &= is_sellable[np.maximum(staple, 0)]
        result = np.where(shows_staple, staple, result)
        bundle_draw = rng.random(size)
        if previous is not None:
            has_previous = previous >= 0
            partner = self.partner[result[np.maximum(previous, 0)]]
            follows = has_previous & (partner >= 0) & (bundle_draw < BUNDLE_SHARE)
            follows &= is_sellable[np.maximum(partner, 0)]
            result = np.where(follows, partner, result)
        return result


def build_tastes(rng: np.random.Generator, catalogue: Catalogue, customers: int) -> Tastes:
    """Draw every customer's tastes and the catalogue's bundles.

    Args:
        rng: The tastes' random stream.
        catalogue: The run's catalogue (every product of its lifetime).
        customers: Customers, the spare pool included.
    """
    first = _draw_categories(rng, catalogue, customers)
    second = _draw_categories(rng, catalogue, customers)
    again = second == first
    second = np.where(again, _draw_categories(rng, catalogue, customers), second)
    brand = _draw_brands(rng, catalogue, first)
    repeat = rng.random(customers) < REPEAT_BUYER_SHARE
    staples = np.full((customers, STAPLES), -1, dtype=np.int64)
    for slot in range(STAPLES):
        picked = _draw_in_categories(rng, catalogue, first)
        staples[:, slot] = np.where(repeat, picked, -1)
    partner = np.full(catalogue.size, -1, dtype=np.int64)
    bundled = rng.permutation(catalogue.size)[: int(catalogue.size * BUNDLE_PRODUCT_SHARE) // 2 * 2]
    partner[bundled[0::2]] = bundled[1::2]
    partner[bundled[1::2]] = bundled[0::2]
    return Tastes(
        favourite=np.stack([first, second], axis=1),
        brand=np.where(brand >= 0, brand, 0),
        staples=staples,
        partner=partner,
    )


# --- sampling helpers --------------------------------------------------------------------------


def _category_of(catalogue: Catalogue) -> np.ndarray:
    return LEAF_LEVEL2[catalogue.leaf]


def _draw_categories(rng: np.random.Generator, catalogue: Catalogue, size: int) -> np.ndarray:
    """Second-level categories in proportion to their products' total popularity."""
    mass = np.bincount(_category_of(catalogue), weights=catalogue.popularity, minlength=len(_LEVEL2))
    return rng.choice(len(_LEVEL2), size=size, p=mass / mass.sum())


def _draw_in_categories(rng: np.random.Generator, catalogue: Catalogue, category: np.ndarray) -> np.ndarray:
    """A product of each category, by popularity (-1 for a category without products)."""
    picked = np.full(len(category), -1, dtype=np.int64)
    of_product = _category_of(catalogue)
    draws = rng.random(len(category))
    for value in np.unique(category):
        members = np.flatnonzero(of_product == value)
        rows = np.flatnonzero(category == value)
        if len(members):
            cumulative = np.cumsum(catalogue.popularity[members])
            at = np.searchsorted(cumulative, draws[rows] * cumulative[-1], side="right")
            picked[rows] = members[np.minimum(at, len(members) - 1)]
    return picked


def _draw_brands(rng: np.random.Generator, catalogue: Catalogue, category: np.ndarray) -> np.ndarray:
    """The brand of a popular product of each category (-1 for a category without products)."""
    picked = _draw_in_categories(rng, catalogue, category)
    return np.where(picked >= 0, catalogue.brand[np.maximum(picked, 0)], -1)


def _draw_by_taste(
    catalogue: Catalogue,
    sellable: np.ndarray,
    category: np.ndarray,
    brand: np.ndarray,
    uniform: np.ndarray,
    wanted: np.ndarray,
) -> np.ndarray:
    """For the ``wanted`` rows, a sellable product of ``category`` by popularity, the favourite
    ``brand`` boosted; -1 elsewhere and where the category has no sellable product."""
    picked = np.full(len(category), -1, dtype=np.int64)
    rows_wanted = np.flatnonzero(wanted)
    if len(rows_wanted) == 0 or len(sellable) == 0:
        return picked
    of_sellable = _category_of(catalogue)[sellable]
    keys = category[rows_wanted] * (int(catalogue.brand.max()) + 1) + brand[rows_wanted]
    for key in np.unique(keys):
        rows = rows_wanted[keys == key]
        value, favourite = divmod(int(key), int(catalogue.brand.max()) + 1)
        members = sellable[of_sellable == value]
        if len(members) == 0:
            continue
        weight = catalogue.popularity[members] * np.where(
            catalogue.brand[members] == favourite, BRAND_BOOST, 1.0
        )
        cumulative = np.cumsum(weight)
        at = np.searchsorted(cumulative, uniform[rows] * cumulative[-1], side="right")
        picked[rows] = members[np.minimum(at, len(members) - 1)]
    return picked
