"""Fixed reference lists the demo generator draws from.

Long (~400 lines): data, not logic (product, name and place lists).

Kept as plain constants (never read from the environment or the network) so
that the generated data depends on the seed and the arguments only.
"""

from __future__ import annotations

import numpy as np

# Canonical order statuses (docs/contract.md §3) and their code = index.
STATUSES = ("pending", "processing", "shipped", "delivered", "cancelled", "returned")
PENDING, PROCESSING, SHIPPED, DELIVERED, CANCELLED, RETURNED = range(6)
STATUS_WEIGHTS = (0.08, 0.10, 0.12, 0.62, 0.05, 0.03)

# Valid spellings of each status that are not the canonical lowercase word.
# Only trimming and case folding are needed to map them (no inner double spaces).
STATUS_VARIANTS: tuple[tuple[str, ...], ...] = (
    ("Pending", "PENDING", " pending", "New", "new", "CREATED", "Created "),
    ("Processing", "PROCESSING", "paid", "Paid", "CONFIRMED", " confirmed"),
    (" Shipped ", "SHIPPED", "Dispatched", "DISPATCHED", "in transit", "In Transit"),
    ("Delivered", "DELIVERED", "Complete", "completed", "COMPLETED", "Fulfilled"),
    ("Cancelled", "canceled", "CANCELED", "Void", "VOID", " cancelled "),
    ("Returned", "RETURNED", "Refunded", "refunded", "return", "Return "),
)

# Statuses that normalise to nothing (never empty, never a null marker).
UNKNOWN_STATUSES = (
    "lost",
    "on hold",
    "???",
    "backordered",
    "unknown",
    "awaiting stock",
    "disputed",
    "in review",
)

# Strings no timestamp format of docs/contract.md §3 accepts (never empty, never
# digits only, which could read as epoch seconds or yyyyMMdd).
UNPARSEABLE_TIMESTAMPS = (
    "not a date",
    "2024-13-45",
    "31/31/2024",
    "2025-99-99 25:61:61",
    "tomorrow",
    "13/45/2025",
    "00/00/0000",
    "2025-06-31T25:00:00",
)
UNPARSEABLE_DATES = (
    "not a date",
    "2024-02-45",
    "32/13/2023",
    "soon",
    "0000-00-00",
    "2023-00-10",
    "someday",
)

# Item values outside the docs/contract.md §3 rules (quantity integer 1..1000,
# 0 < unit_price <= 100000, discount 0..100).
INVALID_QUANTITIES = ("0", "-1", "-3", "2.5", "100000", "abc", "1001")
INVALID_UNIT_PRICES = ("0", "0.00", "-12.99", "-0.50", "250000", "100000.01", "free")
INVALID_DISCOUNTS = ("-5", "150", "101", "-10", "200")

CHANNELS = ("web", "mobile", "marketplace", "store")
CHANNEL_WEIGHTS = (0.45, 0.35, 0.12, 0.08)
PAYMENTS = ("card", "paypal", "bank_transfer", "cod", "gift_card")
PAYMENT_WEIGHTS = (0.55, 0.20, 0.08, 0.07, 0.10)
DISCOUNTS = (5, 10, 15, 20, 25)
DISCOUNT_WEIGHTS = (0.35, 0.30, 0.15, 0.12, 0.08)
QUANTITY_WEIGHTS = (0.62, 0.24, 0.09, 0.03, 0.02)  # quantities 1..5
LINES_WEIGHTS = (0.25, 0.30, 0.20, 0.15, 0.10)  # 1..5 lines, mean 2.55

SEGMENTS = ("consumer", "small_business", "corporate", "home_office")
SEGMENT_WEIGHTS = (0.70, 0.15, 0.08, 0.07)

COUNTRIES = ("US", "GB", "DE", "FR", "NL", "ES", "IT", "SE", "PL", "CA", "AU", "IE")
COUNTRY_WEIGHTS = (0.28, 0.14, 0.13, 0.10, 0.05, 0.06, 0.06, 0.03, 0.04, 0.05, 0.04, 0.02)
CITIES: dict[str, tuple[str, ...]] = {
    "US": ("New York", "Los Angeles", "Chicago", "Houston", "Seattle", "Boston"),
    "GB": ("London", "Manchester", "Birmingham", "Leeds", "Glasgow"),
    "DE": ("Berlin", "Hamburg", "München", "Köln", "Frankfurt"),
    "FR": ("Paris", "Lyon", "Marseille", "Toulouse", "Nantes"),
    "NL": ("Amsterdam", "Rotterdam", "Utrecht", "Eindhoven"),
    "ES": ("Madrid", "Barcelona", "Valencia", "Sevilla"),
    "IT": ("Roma", "Milano", "Napoli", "Torino", "Bologna"),
    "SE": ("Stockholm", "Göteborg", "Malmö"),
    "PL": ("Warszawa", "Kraków", "Wrocław", "Gdańsk"),
    "CA": ("Toronto", "Montréal", "Vancouver", "Calgary"),
    "AU": ("Sydney", "Melbourne", "Brisbane", "Perth"),
    "IE": ("Dublin", "Cork", "Galway"),
}

# (display name, ascii form used in e-mail addresses)
FIRST_NAMES = (
    ("Emma", "emma"),
    ("Liam", "liam"),
    ("Olivia", "olivia"),
    ("Noah", "noah"),
    ("Ava", "ava"),
    ("Lucas", "lucas"),
    ("Mia", "mia"),
    ("Leon", "leon"),
    ("Sofia", "sofia"),
    ("Mateo", "mateo"),
    ("Chloé", "chloe"),
    ("Hugo", "hugo"),
    ("Zoë", "zoe"),
    ("José", "jose"),
    ("Anna", "anna"),
    ("Jan", "jan"),
    ("Lena", "lena"),
    ("Finn", "finn"),
    ("Maja", "maja"),
    ("Oskar", "oskar"),
    ("Giulia", "giulia"),
    ("Marco", "marco"),
    ("Aoife", "aoife"),
    ("Seán", "sean"),
    ("Isla", "isla"),
    ("Jack", "jack"),
    ("Amélie", "amelie"),
    ("Théo", "theo"),
    ("Lucía", "lucia"),
    ("Pablo", "pablo"),
    ("Zofia", "zofia"),
    ("Kacper", "kacper"),
    ("Ella", "ella"),
    ("William", "william"),
    ("Grace", "grace"),
    ("Ethan", "ethan"),
    ("Nora", "nora"),
    ("Elias", "elias"),
    ("Freya", "freya"),
    ("Aarav", "aarav"),
    ("Priya", "priya"),
    ("Wei", "wei"),
    ("Mei", "mei"),
    ("Omar", "omar"),
    ("Layla", "layla"),
    ("Daniel", "daniel"),
    ("Sara", "sara"),
    ("Björn", "bjorn"),
)
LAST_NAMES = (
    ("Smith", "smith"),
    ("Johnson", "johnson"),
    ("Brown", "brown"),
    ("Garcia", "garcia"),
    ("Miller", "miller"),
    ("Davis", "davis"),
    ("Martin", "martin"),
    ("Bernard", "bernard"),
    ("Dubois", "dubois"),
    ("Müller", "mueller"),
    ("Schmidt", "schmidt"),
    ("Schneider", "schneider"),
    ("Fischer", "fischer"),
    ("de Vries", "devries"),
    ("Jansen", "jansen"),
    ("Rossi", "rossi"),
    ("Russo", "russo"),
    ("Bianchi", "bianchi"),
    ("García", "garcia"),
    ("Fernández", "fernandez"),
    ("López", "lopez"),
    ("Nowak", "nowak"),
    ("Kowalski", "kowalski"),
    ("Wiśniewska", "wisniewska"),
    ("Andersson", "andersson"),
    ("Johansson", "johansson"),
    ("Murphy", "murphy"),
    ("O'Brien", "obrien"),
    ("Kelly", "kelly"),
    ("Wilson", "wilson"),
    ("Taylor", "taylor"),
    ("Thompson", "thompson"),
    ("White", "white"),
    ("Lee", "lee"),
    ("Nguyen", "nguyen"),
    ("Chen", "chen"),
    ("Wang", "wang"),
    ("Patel", "patel"),
    ("Singh", "singh"),
    ("Khan", "khan"),
    ("Moreau", "moreau"),
    ("Laurent", "laurent"),
    ("Petit", "petit"),
    ("Wagner", "wagner"),
    ("Becker", "becker"),
    ("Romano", "romano"),
    ("Walsh", "walsh"),
)
EMAIL_DOMAINS = ("example.com", "example.org", "example.net", "mail.example.com", "shop.example")
EMAIL_DOMAIN_WEIGHTS = (0.40, 0.20, 0.20, 0.12, 0.08)
EMAIL_SEPARATORS = (".", "_", "")

# category, (price low, price high), subcategories with their nouns, brands
CATEGORIES: tuple[
    tuple[str, float, float, tuple[tuple[str, tuple[str, ...]], ...], tuple[str, ...]], ...
] = (
    (
        "Electronics",
        15.0,
        1500.0,
        (
            ("Phones", ("Smartphone", "Phone")),
            ("Laptops", ("Laptop", "Notebook", "Ultrabook")),
            ("Audio", ("Headphones", "Earbuds", "Speaker", "Soundbar")),
            ("Accessories", ("Charger", "Cable", "Power Bank", "Case")),
            ("Cameras", ("Camera", "Action Cam", "Lens")),
        ),
        ("Voltix", "Nexora", "Sonique", "Pixelon", "Kyro"),
    ),
    (
        "Home & Kitchen",
        8.0,
        600.0,
        (
            ("Cookware", ("Frying Pan", "Saucepan", "Dutch Oven", "Wok")),
            ("Small Appliances", ("Blender", "Kettle", "Toaster", "Coffee Maker")),
            ("Furniture", ("Side Table", "Desk Chair", "Bookshelf")),
            ("Decor", ("Vase", "Wall Clock", "Table Lamp", "Candle Set")),
            ("Bedding", ("Duvet", "Pillow Set", "Bed Sheet")),
        ),
        ("Hearthly", "Casaluxe", "Brewmaster", "Nordhaus"),
    ),
    (
        "Fashion",
        9.0,
        300.0,
        (
            ("Men", ("Shirt", "Chinos", "Jacket", "Sweater")),
            ("Women", ("Dress", "Blouse", "Skirt", "Cardigan")),
            ("Shoes", ("Sneakers", "Boots", "Loafers", "Sandals")),
            ("Bags", ("Backpack", "Tote Bag", "Wallet")),
            ("Accessories", ("Scarf", "Belt", "Sunglasses", "Cap")),
        ),
        ("Urbane", "Threadline", "Velour", "Stride"),
    ),
    (
        "Beauty",
        4.0,
        150.0,
        (
            ("Skincare", ("Moisturiser", "Serum", "Cleanser", "Sunscreen")),
            ("Makeup", ("Lipstick", "Mascara", "Foundation", "Palette")),
            ("Haircare", ("Shampoo", "Conditioner", "Hair Oil")),
            ("Fragrance", ("Eau de Parfum", "Eau de Toilette", "Body Mist")),
        ),
        ("Lumière", "Glowhaus", "PureLeaf"),
    ),
    (
        "Sports",
        8.0,
        800.0,
        (
            ("Fitness", ("Yoga Mat", "Dumbbell Set", "Kettlebell", "Resistance Bands")),
            ("Cycling", ("Bike Helmet", "Bike Light", "Road Bike", "Cycling Gloves")),
            ("Outdoor", ("Tent", "Sleeping Bag", "Hiking Poles", "Backpack")),
            ("Team Sports", ("Football", "Basketball", "Shin Guards")),
        ),
        ("Peakform", "Trailwise", "Velocity"),
    ),
    (
        "Toys",
        5.0,
        200.0,
        (
            ("Building Sets", ("Brick Set", "Construction Kit")),
            ("Dolls", ("Doll", "Doll House", "Plush Bear")),
            ("Games", ("Board Game", "Puzzle", "Card Game")),
            ("Outdoor Play", ("Scooter", "Kite", "Water Blaster")),
        ),
        ("Brickly", "Playnest", "Funforge"),
    ),
    (
        "Books",
        5.0,
        60.0,
        (
            ("Fiction", ("Novel", "Thriller", "Short Stories")),
            ("Non-fiction", ("Biography", "Cookbook", "History")),
            ("Children", ("Picture Book", "Activity Book")),
            ("Comics", ("Graphic Novel", "Manga Volume")),
        ),
        ("Northwind Press", "Harbor Books", "Quill & Co"),
    ),
    (
        "Grocery",
        1.0,
        40.0,
        (
            ("Snacks", ("Crisps", "Granola Bars", "Mixed Nuts")),
            ("Beverages", ("Coffee Beans", "Green Tea", "Sparkling Water")),
            ("Pantry", ("Olive Oil", "Pasta", "Basmati Rice", "Honey")),
            ("Organic", ("Oat Milk", "Quinoa", "Chia Seeds")),
        ),
        ("FarmFresh", "Goodgrain", "Sipwell"),
    ),
)
CATEGORY_WEIGHTS = (0.18, 0.16, 0.18, 0.10, 0.10, 0.09, 0.10, 0.09)
MODEL_LETTERS = tuple("ABCDEFGHKLMNPRSTVXZ")

# Orders per hour of day (UTC), evening peak.
HOUR_WEIGHTS = (
    1.0,
    0.6,
    0.4,
    0.3,
    0.3,
    0.4,
    0.8,
    1.5,
    2.2,
    2.6,
    2.8,
    3.0,
    3.2,
    3.1,
    2.9,
    2.8,
    2.9,
    3.2,
    3.7,
    4.2,
    4.4,
    3.9,
    2.9,
    1.8,
)
# Monday .. Sunday
# Monday..Sunday: a weekend uplift (Saturday about 40 % above Tuesday).
WEEKDAY_FACTORS = (0.93, 0.90, 0.92, 0.97, 1.05, 1.30, 1.22)

# Days with a promotion (volume x PROMO_FACTOR) or an outage (x DROP_FACTOR),
# for the anomaly detector to find. All at least 8 weeks into the window: the
# detector draws its band after 6 weeks and needs a few more to settle it.
PROMO_DAYS = ("2025-08-29", "2025-11-28", "2025-12-01", "2026-03-20", "2026-05-12")
DROP_DAYS = ("2025-09-16", "2026-02-17")
PROMO_FACTOR = 3.5
DROP_FACTOR = 0.05


def _flatten() -> dict[str, np.ndarray | tuple[str, ...]]:
    """Index arrays that let numpy pick subcategories, brands and nouns per category."""
    subs: list[str] = []
    sub_cat: list[int] = []
    nouns: list[str] = []
    noun_start: list[int] = []
    noun_count: list[int] = []
    brands: list[str] = []
    brand_start: list[int] = []
    brand_count: list[int] = []
    sub_start: list[int] = []
    sub_count: list[int] = []
    for ci, (_, _, _, subcats, cat_brands) in enumerate(CATEGORIES):
        sub_start.append(len(subs))
        sub_count.append(len(subcats))
        for sub_name, sub_nouns in subcats:
            subs.append(sub_name)
            sub_cat.append(ci)
            noun_start.append(len(nouns))
            noun_count.append(len(sub_nouns))
            nouns.extend(sub_nouns)
        brand_start.append(len(brands))
        brand_count.append(len(cat_brands))
        brands.extend(cat_brands)
    return {
        "subcategories": tuple(subs),
        "sub_category": np.array(sub_cat),
        "sub_start": np.array(sub_start),
        "sub_count": np.array(sub_count),
        "nouns": tuple(nouns),
        "noun_start": np.array(noun_start),
        "noun_count": np.array(noun_count),
        "brands": tuple(brands),
        "brand_start": np.array(brand_start),
        "brand_count": np.array(brand_count),
    }


_FLAT = _flatten()
CATEGORY_NAMES = tuple(c[0] for c in CATEGORIES)
CATEGORY_PRICE_LOW = np.array([c[1] for c in CATEGORIES])
CATEGORY_PRICE_HIGH = np.array([c[2] for c in CATEGORIES])
SUBCATEGORIES: tuple[str, ...] = _FLAT["subcategories"]  # type: ignore[assignment]
SUB_START: np.ndarray = _FLAT["sub_start"]  # type: ignore[assignment]
SUB_COUNT: np.ndarray = _FLAT["sub_count"]  # type: ignore[assignment]
NOUNS: tuple[str, ...] = _FLAT["nouns"]  # type: ignore[assignment]
NOUN_START: np.ndarray = _FLAT["noun_start"]  # type: ignore[assignment]
NOUN_COUNT: np.ndarray = _FLAT["noun_count"]  # type: ignore[assignment]
BRANDS: tuple[str, ...] = _FLAT["brands"]  # type: ignore[assignment]
BRAND_START: np.ndarray = _FLAT["brand_start"]  # type: ignore[assignment]
BRAND_COUNT: np.ndarray = _FLAT["brand_count"]  # type: ignore[assignment]

CITY_NAMES = tuple(city for country in COUNTRIES for city in CITIES[country])
CITY_START = np.cumsum([0] + [len(CITIES[c]) for c in COUNTRIES[:-1]])
CITY_COUNT = np.array([len(CITIES[c]) for c in COUNTRIES])


def probabilities(weights: tuple[float, ...]) -> np.ndarray:
    """Normalised probability vector for numpy's choice."""
    w = np.asarray(weights, dtype=float)
    return w / w.sum()
