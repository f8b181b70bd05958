"""Static vocabularies of the synthetic shop: countries, cities, names, categories, devices, traffic.

Everything here is plain data. The generator draws indices into these tables with numpy and
renders strings with pyarrow, so no value needs JSON or CSV escaping except where noted
(names with apostrophes are CSV-quoted by the writer; JSON never carries names).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass


@dataclass(frozen=True)
class City:
    """A city with a postal-code pattern.

    ``postal_kind`` is one of ``num`` (zero-padded integer in ``[low, high]`` of ``width``
    digits), ``nl`` (``1234 AB``), ``gb`` (``<outward> 1AB``; ``outward`` is the district),
    ``se`` (``123 45``) or ``pl`` (``12-345``).
    """

    name: str
    postal_kind: str
    low: int = 0
    high: int = 0
    width: int = 5
    outward: str = ""


@dataclass(frozen=True)
class Country:
    """A shipping/customer country with its currency and name pools."""

    code: str
    currency: str
    weight: float
    phone_prefix: str
    cities: tuple[City, ...]
    email_domains: tuple[str, ...]
    first_names: tuple[str, ...]
    last_names: tuple[str, ...]


# fmt: off
_DE_FIRST = (
    "Anna", "Lena", "Leonie", "Marie", "Sophie", "Hannah", "Mia", "Emilia", "Lukas", "Leon", "Finn",
    "Jonas", "Paul", "Felix", "Maximilian", "Jürgen", "Sören", "Zoë", "Käthe", "Björn", "Sabine", "Thomas",
)
_DE_LAST = (
    "Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Schulz", "Hoffmann",
    "Koch", "Bauer", "Richter", "Klein", "Wolf", "Schröder", "Neumann", "Schwarz", "Zimmermann", "Braun",
    "Krüger", "Hartmann", "Lange", "Weiß", "Groß", "von Bergen",
)

COUNTRIES: tuple[Country, ...] = (
    Country(
        "DE", "EUR", 0.42, "+49",
        (
            City("Berlin", "num", 10115, 14199), City("Hamburg", "num", 20095, 22769),
            City("München", "num", 80331, 81929), City("Köln", "num", 50667, 51149),
            City("Frankfurt am Main", "num", 60306, 60599), City("Stuttgart", "num", 70173, 70629),
            City("Düsseldorf", "num", 40210, 40629), City("Leipzig", "num", 4103, 4357),
            City("Dresden", "num", 1067, 1328), City("Halle (Saale)", "num", 6108, 6132),
        ),
        ("gmail.com", "web.de", "gmx.de", "t-online.de", "outlook.com"),
        _DE_FIRST, _DE_LAST,
    ),
    Country(
        "AT", "EUR", 0.08, "+43",
        (
            City("Wien", "num", 1010, 1230, 4), City("Graz", "num", 8010, 8063, 4),
            City("Linz", "num", 4020, 4040, 4), City("Salzburg", "num", 5020, 5026, 4),
            City("Innsbruck", "num", 6020, 6080, 4),
        ),
        ("gmx.at", "gmail.com", "aon.at", "outlook.com"),
        _DE_FIRST, _DE_LAST,
    ),
    Country(
        "NL", "EUR", 0.08, "+31",
        (City("Amsterdam", "nl", 1011, 1109), City("Rotterdam", "nl", 3011, 3089),
         City("Utrecht", "nl", 3511, 3585), City("Den Haag", "nl", 2491, 2597),
         City("Eindhoven", "nl", 5611, 5658)),
        ("gmail.com", "ziggo.nl", "kpnmail.nl", "outlook.com"),
        ("Daan", "Sem", "Lucas", "Bram", "Emma", "Julia", "Sanne", "Tess", "Fenna", "Joris"),
        ("de Jong", "Jansen", "de Vries", "van den Berg", "van Dijk", "Bakker", "Visser", "Smit", "Meijer"),
    ),
    Country(
        "FR", "EUR", 0.10, "+33",
        (City("Paris", "num", 75001, 75020), City("Lyon", "num", 69001, 69009),
         City("Marseille", "num", 13001, 13016), City("Toulouse", "num", 31000, 31500),
         City("Lille", "num", 59000, 59800), City("Nantes", "num", 44000, 44300)),
        ("gmail.com", "orange.fr", "free.fr", "laposte.net", "outlook.fr"),
        ("Camille", "Léa", "Manon", "Chloé", "Hugo", "Lucas", "Théo", "Louis", "Élodie", "Jérôme", "Inès"),
        ("Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy", "Lefèvre"),
    ),
    Country(
        "GB", "GBP", 0.09, "+44",
        (City("London", "gb", outward="SW1A"), City("London", "gb", outward="E1"),
         City("Manchester", "gb", outward="M1"), City("Birmingham", "gb", outward="B5"),
         City("Leeds", "gb", outward="LS1"), City("Bristol", "gb", outward="BS1")),
        ("gmail.com", "btinternet.com", "outlook.com", "yahoo.co.uk"),
        ("Oliver", "George", "Harry", "Amelia", "Olivia", "Isla", "Jack", "Charlotte", "Siobhan"),
        ("Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Davies", "O'Brien", "Evans"),
    ),
    Country(
        "SE", "SEK", 0.06, "+46",
        (City("Stockholm", "se", 11120, 19999), City("Göteborg", "se", 41101, 41879),
         City("Malmö", "se", 21110, 21776), City("Uppsala", "se", 75220, 75757)),
        ("gmail.com", "telia.com", "hotmail.se", "outlook.com"),
        ("Åsa", "Björn", "Elsa", "Maja", "Oskar", "Linnéa", "Erik", "Astrid", "Nils"),
        ("Andersson", "Johansson", "Karlsson", "Nilsson", "Eriksson", "Larsson", "Öberg", "Åström"),
    ),
    Country(
        "PL", "PLN", 0.09, "+48",
        (City("Warszawa", "pl", 0, 4999), City("Kraków", "pl", 30000, 31999),
         City("Łódź", "pl", 90000, 94999), City("Wrocław", "pl", 50000, 54999),
         City("Poznań", "pl", 60000, 61999), City("Gdańsk", "pl", 80000, 80999)),
        ("gmail.com", "wp.pl", "onet.pl", "interia.pl", "o2.pl"),
        ("Zofia", "Łukasz", "Jakub", "Małgorzata", "Krzysztof", "Agnieszka", "Piotr", "Anna", "Michał"),
        ("Nowak", "Kowalski", "Wiśniewski", "Wójcik", "Kowalczyk", "Kamiński", "Lewandowski", "Zieliński"),
    ),
    Country(
        "US", "USD", 0.08, "+1",
        (City("New York", "num", 10001, 10292), City("Los Angeles", "num", 90001, 90089),
         City("Chicago", "num", 60601, 60661), City("Houston", "num", 77001, 77099),
         City("Seattle", "num", 98101, 98199)),
        ("gmail.com", "yahoo.com", "outlook.com", "icloud.com", "aol.com"),
        ("Emma", "Liam", "Noah", "Ava", "Mia", "Ethan", "Sofia", "Mason", "Harper", "Zoey"),
        ("Smith", "Johnson", "Garcia", "Martinez", "Miller", "Davis", "Rodriguez", "Nguyen", "O'Neil"),
    ),
)

# fmt: on

#: Countries that have physical stores (the ``store`` channel).
STORE_COUNTRIES: tuple[str, ...] = ("DE", "AT")

# fmt: off
# Category tree, three levels deep: root -> level 2 -> leaves. The generator keeps the path.
CATEGORY_TREE: dict[str, dict[str, tuple[str, ...]]] = {
    "Electronics": {
        "Phones": ("Smartphones", "Phone Cases", "Chargers"),
        "Computers": ("Laptops", "Monitors", "Keyboards"),
        "Audio": ("Headphones", "Speakers", "Microphones"),
    },
    "Fashion": {
        "Women": ("Dresses", "Jackets", "Sneakers"),
        "Men": ("Shirts", "Jeans", "Boots"),
        "Accessories": ("Bags", "Watches", "Sunglasses"),
    },
    "Home & Garden": {
        "Kitchen": ("Cookware", "Knives", "Coffee Makers"),
        "Furniture": ("Chairs", "Desks", "Shelves"),
        "Garden": ("Grills", "Planters", "Garden Tools"),
    },
    "Sports & Outdoors": {
        "Running": ("Running Shoes", "Running Apparel", "Sports Watches"),
        "Camping": ("Tents", "Sleeping Bags", "Backpacks"),
        "Cycling": ("Bikes", "Helmets", "Bike Lights"),
    },
    "Beauty": {
        "Skin Care": ("Moisturizers", "Serums", "Sunscreen"),
        "Hair Care": ("Shampoo", "Hair Dryers", "Conditioner"),
    },
    "Books & Media": {
        "Books": ("Fiction", "Cookbooks", "Children's Books"),
        "Games": ("Board Games", "Video Games", "Puzzles"),
    },
    "Toys": {
        "Building": ("Building Sets", "Marble Runs", "Magnetic Tiles"),
        "Outdoor Toys": ("Scooters", "Water Toys", "Kites"),
    },
}

#: Price range in EUR (low, high) of each root; prices are drawn log-uniformly in it.
ROOT_PRICE_EUR: dict[str, tuple[float, float]] = {
    "Electronics": (9.0, 1400.0),
    "Fashion": (12.0, 320.0),
    "Home & Garden": (8.0, 900.0),
    "Sports & Outdoors": (10.0, 1600.0),
    "Beauty": (4.0, 120.0),
    "Books & Media": (6.0, 80.0),
    "Toys": (7.0, 160.0),
}

BRANDS: dict[str, tuple[str, ...]] = {
    "Electronics": ("Lumio", "Voltra", "Sonique", "Kestrel", "Arcwave", "Nordtek"),
    "Fashion": ("Maison Clé", "Urban Fjord", "Velvet & Co", "Nordkind", "Alma Rosa"),
    "Home & Garden": ("Hearthly", "Gartenfreund", "Casa Linea", "Oakhaus", "Brio Home"),
    "Sports & Outdoors": ("Trailfox", "Peakform", "Velocita", "Nordkind", "Summit Bear"),
    "Beauty": ("Aurelle", "Pure Bloom", "Dermalis", "Nuvé"),
    "Books & Media": ("Lantern Press", "Quill House", "Meeple Works", "Pixel Forge"),
    "Toys": ("Tinker Tots", "Blockwerk", "Kitefly", "Wonder Cub"),
}

# fmt: on

PRODUCT_LINES: tuple[str, ...] = (
    "Classic",
    "Pro",
    "Lite",
    "Max",
    "Air",
    "Flex",
    "Essential",
    "Studio",
    "Urban",
    "Eco",
    "Sport",
    "Plus",
)

COLORS: tuple[str, ...] = ("black", "white", "grey", "navy", "red", "green", "beige", "blue", "pink")
MATERIALS: tuple[str, ...] = ("cotton", "polyester", "wool", "leather", "steel", "oak", "bamboo", "glass")
SIZES: tuple[str, ...] = ("XS", "S", "M", "L", "XL", "XXL")
LANGUAGES: tuple[str, ...] = ("de", "en", "fr", "nl", "sv", "pl")


@dataclass(frozen=True)
class DeviceProfile:
    """A tracked device class: platform (web/app) and the ``device`` object of click events."""

    platform: str
    type: str
    os: str
    browser: str | None
    weight: float


DEVICE_PROFILES: tuple[DeviceProfile, ...] = (
    DeviceProfile("web", "desktop", "Windows", "Chrome", 0.17),
    DeviceProfile("web", "desktop", "Windows", "Edge", 0.06),
    DeviceProfile("web", "desktop", "macOS", "Safari", 0.06),
    DeviceProfile("web", "desktop", "macOS", "Chrome", 0.05),
    DeviceProfile("web", "desktop", "Linux", "Firefox", 0.02),
    DeviceProfile("web", "mobile", "iOS", "Safari", 0.17),
    DeviceProfile("web", "mobile", "Android", "Chrome", 0.13),
    DeviceProfile("web", "mobile", "Android", "Samsung Internet", 0.03),
    DeviceProfile("web", "tablet", "iPadOS", "Safari", 0.04),
    DeviceProfile("app", "mobile", "iOS", None, 0.14),
    DeviceProfile("app", "mobile", "Android", None, 0.11),
    DeviceProfile("app", "tablet", "iPadOS", None, 0.02),
)


@dataclass(frozen=True)
class TrafficSource:
    """Where a visit came from: its ``utm`` object (``None`` for direct/organic) and referrer."""

    source: str | None
    medium: str | None
    campaign: str | None
    referrer: str | None
    weight: float


TRAFFIC_SOURCES: tuple[TrafficSource, ...] = (
    TrafficSource(None, None, None, None, 0.30),
    TrafficSource(None, None, None, "https://www.google.com/", 0.17),
    TrafficSource(None, None, None, "https://www.bing.com/", 0.02),
    TrafficSource("google", "cpc", "brand_search", "https://www.google.com/", 0.09),
    TrafficSource("google", "cpc", "generic_search", "https://www.google.com/", 0.07),
    TrafficSource("newsletter", "email", "weekly_{week}", None, 0.09),
    TrafficSource("facebook", "paid_social", "{season}_sale_{year}", "https://www.facebook.com/", 0.08),
    TrafficSource("instagram", "paid_social", "influencer_{quarter}", "https://www.instagram.com/", 0.05),
    TrafficSource("awin", "affiliate", "partner_feed", "https://www.awin1.com/", 0.05),
    TrafficSource("idealo", "referral", "price_comparison", "https://www.idealo.de/", 0.05),
    TrafficSource("tiktok", "social", "creator_{quarter}", "https://www.tiktok.com/", 0.03),
)

# fmt: off
#: Payment types with weights per channel.
PAYMENT_TYPES: tuple[str, ...] = (
    "card", "paypal", "klarna", "voucher", "bank_transfer", "cash_on_delivery", "cash",
)
PAYMENT_WEIGHTS: dict[str, tuple[float, ...]] = {
    "web": (0.40, 0.28, 0.12, 0.03, 0.09, 0.08, 0.0),
    "app": (0.45, 0.33, 0.12, 0.03, 0.03, 0.04, 0.0),
    "marketplace": (0.55, 0.35, 0.0, 0.0, 0.10, 0.0, 0.0),
    "store": (0.65, 0.0, 0.0, 0.05, 0.0, 0.0, 0.30),
}

# fmt: on


def ascii_slug(text: str) -> str:
    """Lower-case ASCII transliteration without spaces or punctuation (for e-mail local parts)."""
    special = {"ł": "l", "Ł": "l", "ß": "ss", "ø": "o", "Ø": "o", "æ": "ae", "Æ": "ae"}
    text = "".join(special.get(ch, ch) for ch in text)
    decomposed = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return "".join(ch for ch in decomposed.lower() if ch.isalnum())


def url_slug(text: str) -> str:
    """Lower-case ASCII slug with hyphens, for category URLs."""
    special = {"&": "and", "'": ""}
    text = "".join(special.get(ch, ch) for ch in text)
    decomposed = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    words = "".join(ch if ch.isalnum() else " " for ch in decomposed.lower()).split()
    return "-".join(words)
