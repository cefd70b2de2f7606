"""A deterministic synthetic e-commerce world: the toolkit's embedded default dataset.

The world has planted, recoverable structure so that every model family has something to learn:

- categories double as latent intents; users move between intents by a fixed Markov chain, starting
  from a per-user preference (signal for session-level and long-range models);
- inside a session the next item is, with probability ``follow_prob``, one of 2-3 fixed "follow-up"
  items of the previous one (signal for sequential models), otherwise a Zipf-popular item of the
  session's category (signal for popularity and collaborative models);
- every session opens with a templated natural-language query labelled with its intent, so an intent
  classifier has to generalise over slot fillers rather than memorise strings.

Everything is drawn from one ``numpy.random.default_rng(seed)`` and vectorised over users; Python
loops only run over session index, position in session, and the fixed text templates.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys_cli.data.base import ITEM, TEXT, TIME, TITLE, USER, SourceData
from recsys_cli.errors import RecsysError

SESSION = "session_id"
INTENT = "intent"
CATEGORY = "category"
QUERY = "query"

# 2024-01-01 00:00:00 UTC, so timestamps look like real epoch seconds.
_EPOCH_START = 1_704_067_200
_DAY = 86_400
_HOUR = 3_600
# Users start over this window, so their histories overlap and a global time split cuts through them.
_USER_START_SPREAD_DAYS = 90
_MEAN_SESSION_GAP_DAYS = 2.0
_MEAN_CLICK_GAP_SECONDS = 60.0
_MIN_CLICK_GAP_SECONDS = 5
_ZIPF_EXPONENT = 1.0
_PREFERENCE_CONCENTRATION = 0.5  # Dirichlet alpha: < 1 gives users a few favourite intents
_SUCCESSOR_MASS = 0.9  # the rest of each intent transition row is spread uniformly
_MAX_FOLLOW_UPS = 3


@dataclass(frozen=True)
class _CategoryTemplate:
    """Vocabulary of one category: what its items are called and how shoppers ask for them."""

    name: str
    brands: tuple[str, ...]
    adjectives: tuple[str, ...]  # title case, used in titles and (lowered) in queries
    nouns: tuple[str, ...]  # singular, title case
    features: tuple[str, ...]  # noun phrases for descriptions
    uses: tuple[str, ...]  # what the thing is for, read after "for"
    thing: tuple[str, ...]  # singular phrases a shopper uses
    things: tuple[str, ...]  # plural phrases a shopper uses
    fans: tuple[str, ...]  # kinds of people who buy it; plural is "+s"
    prices: tuple[str, ...]  # budget caps in dollars


CATEGORY_TEMPLATES: tuple[_CategoryTemplate, ...] = (
    _CategoryTemplate(
        name="running shoes",
        brands=("Trailblaze", "Stridewell", "Pacefield", "Kinetra"),
        adjectives=(
            "Waterproof",
            "Lightweight",
            "Cushioned",
            "Breathable",
            "Carbon-Plated",
        ),
        nouns=("Running Shoe", "Trail Shoe", "Racing Flat", "Road Trainer"),
        features=(
            "a grippy rubber outsole",
            "responsive midsole foam",
            "a breathable mesh upper",
        ),
        uses=(
            "trail running",
            "a first marathon",
            "daily jogging",
            "interval training",
        ),
        thing=("pair of running shoes", "trail shoe", "marathon shoe"),
        things=("running shoes", "trail runners", "jogging sneakers"),
        fans=("runner", "marathoner", "jogger"),
        prices=("80", "100", "150"),
    ),
    _CategoryTemplate(
        name="coffee",
        brands=("Beanhaus", "Morning Ritual", "Crema Co", "Highland Roasters"),
        adjectives=("Dark Roast", "Single-Origin", "Organic", "Decaf", "Medium Roast"),
        nouns=("Espresso Blend", "Coffee Beans", "Ground Coffee", "Cold Brew Pack"),
        features=(
            "notes of chocolate and cherry",
            "small-batch roasting",
            "a smooth low-acid finish",
        ),
        uses=("espresso at home", "a french press", "morning pour-over", "cold brew"),
        thing=("bag of coffee beans", "espresso blend", "ground coffee"),
        things=("coffee beans", "espresso roasts", "ground coffees"),
        fans=("coffee lover", "espresso fan", "caffeine addict"),
        prices=("15", "25", "40"),
    ),
    _CategoryTemplate(
        name="camping gear",
        brands=("Northridge", "Basecamp", "Wildhollow", "Summit Trail"),
        adjectives=("Ultralight", "Two-Person", "Insulated", "All-Season", "Packable"),
        nouns=("Tent", "Sleeping Bag", "Camp Stove", "Headlamp"),
        features=(
            "a weatherproof shell",
            "a compact carry sack",
            "setup in under five minutes",
        ),
        uses=(
            "backpacking trips",
            "car camping",
            "a weekend in the mountains",
            "two people",
        ),
        thing=("tent", "sleeping bag", "camp stove"),
        things=("tents", "sleeping bags", "camping essentials"),
        fans=("camper", "backpacker", "hiker"),
        prices=("60", "150", "300"),
    ),
    _CategoryTemplate(
        name="smartphones",
        brands=("Novaphone", "Pixelon", "Orbitel", "Lumera"),
        adjectives=("Foldable", "5G", "Compact", "Pro", "Budget"),
        nouns=("Smartphone", "Phone", "Camera Phone", "Phablet"),
        features=(
            "a triple-lens camera",
            "two-day battery life",
            "a bright OLED display",
        ),
        uses=("mobile photography", "mobile gaming", "a teenager", "work calls"),
        thing=("smartphone", "new phone", "android phone"),
        things=("smartphones", "phones", "unlocked phones"),
        fans=("tech enthusiast", "gadget lover", "teenager"),
        prices=("300", "500", "800"),
    ),
    _CategoryTemplate(
        name="baby care",
        brands=("Little Sprout", "Cuddlenest", "Tinytoes", "Babybloom"),
        adjectives=("Hypoallergenic", "Gentle", "Organic", "Fragrance-Free", "Soft"),
        nouns=("Diaper Pack", "Baby Wipes", "Baby Lotion", "Swaddle Blanket"),
        features=(
            "pediatrician-tested ingredients",
            "ultra-soft materials",
            "a leak-proof design",
        ),
        uses=("a newborn", "diaper rash", "overnight use", "a baby shower"),
        thing=("pack of diapers", "baby lotion", "swaddle blanket"),
        things=("diapers", "baby wipes", "baby care products"),
        fans=("new parent", "expecting mom", "new dad"),
        prices=("20", "35", "50"),
    ),
    _CategoryTemplate(
        name="board games",
        brands=("Meeple Works", "Dicecraft", "Tabletop Guild", "Rollhouse"),
        adjectives=("Cooperative", "Strategy", "Family", "Party", "Deluxe"),
        nouns=("Board Game", "Card Game", "Dice Game", "Puzzle Game"),
        features=(
            "quick 30-minute rounds",
            "beautifully illustrated cards",
            "room for six players",
        ),
        uses=("game night", "two players", "family evenings", "a party of six"),
        thing=("board game", "card game", "strategy game"),
        things=("board games", "card games", "party games"),
        fans=("board game geek", "tabletop gamer", "puzzle fan"),
        prices=("25", "40", "60"),
    ),
    _CategoryTemplate(
        name="headphones",
        brands=("Sonique", "Auralis", "Bassline", "Quietwave"),
        adjectives=("Wireless", "Noise-Cancelling", "Over-Ear", "Sport", "Studio"),
        nouns=("Headphone", "Headset", "Earphone", "Monitor Headphone"),
        features=(
            "active noise cancelling",
            "30 hours of playback",
            "memory-foam ear cushions",
        ),
        uses=("the gym", "long flights", "music production", "the daily commute"),
        thing=("pair of headphones", "headset", "set of earbuds"),
        things=("headphones", "earbuds", "wireless headsets"),
        fans=("music lover", "audiophile", "podcast fan"),
        prices=("50", "100", "250"),
    ),
    _CategoryTemplate(
        name="skincare",
        brands=("Dermaglow", "Purelle", "Velvetine", "Clearroot"),
        adjectives=("Hydrating", "Vitamin C", "Oil-Free", "Night", "Soothing"),
        nouns=("Face Serum", "Moisturizer", "Cleanser", "Eye Cream"),
        features=(
            "hyaluronic acid",
            "a lightweight non-greasy texture",
            "dermatologist-tested care",
        ),
        uses=("dry skin", "oily skin", "a nighttime routine", "sensitive skin"),
        thing=("face serum", "moisturizer", "gentle cleanser"),
        things=("skincare products", "serums", "moisturizers"),
        fans=("skincare enthusiast", "beauty lover", "self-care fan"),
        prices=("20", "40", "70"),
    ),
    _CategoryTemplate(
        name="cookware",
        brands=("Ironhearth", "Chefline", "Copperleaf", "Panmaster"),
        adjectives=("Nonstick", "Cast Iron", "Stainless", "Ceramic", "Induction-Ready"),
        nouns=("Frying Pan", "Saucepan", "Dutch Oven", "Wok"),
        features=(
            "even heat distribution",
            "an oven-safe handle",
            "a scratch-resistant coating",
        ),
        uses=("searing steak", "stir fry", "slow-cooked stews", "a small kitchen"),
        thing=("frying pan", "dutch oven", "saucepan"),
        things=("pots and pans", "cookware sets", "skillets"),
        fans=("home cook", "aspiring chef", "foodie"),
        prices=("30", "80", "150"),
    ),
    _CategoryTemplate(
        name="yoga",
        brands=("Zenflow", "Asana Lab", "Corewell", "Lotusfit"),
        adjectives=("Non-Slip", "Extra-Thick", "Eco", "Travel", "Cork"),
        nouns=("Yoga Mat", "Yoga Block", "Resistance Band", "Foam Roller"),
        features=(
            "a non-slip grip surface",
            "joint-friendly cushioning",
            "latex-free materials",
        ),
        uses=("hot yoga", "pilates at home", "stretching after workouts", "beginners"),
        thing=("yoga mat", "foam roller", "set of resistance bands"),
        things=("yoga mats", "yoga props", "resistance bands"),
        fans=("yogi", "pilates fan", "fitness buff"),
        prices=("20", "40", "80"),
    ),
    _CategoryTemplate(
        name="pet supplies",
        brands=("Wagwell", "Pawsome", "Barkley & Co", "Furbridge"),
        adjectives=("Durable", "Orthopedic", "Chew-Proof", "Reflective", "Grain-Free"),
        nouns=("Dog Bed", "Dog Leash", "Chew Toy", "Dog Food"),
        features=(
            "vet-approved materials",
            "machine-washable fabric",
            "tough double stitching",
        ),
        uses=("a large dog", "a teething puppy", "senior dogs", "night walks"),
        thing=("dog bed", "leash", "chew toy"),
        things=("dog toys", "pet supplies", "dog beds"),
        fans=("dog owner", "dog lover", "new puppy owner"),
        prices=("15", "40", "90"),
    ),
    _CategoryTemplate(
        name="gardening",
        brands=("Greenthumb", "Rootwise", "Bloomfield", "Terracraft"),
        adjectives=("Ergonomic", "Heavy-Duty", "Raised", "Self-Watering", "Compact"),
        nouns=("Garden Trowel", "Pruning Shears", "Planter", "Watering Can"),
        features=(
            "rust-resistant steel",
            "a comfortable grip",
            "weatherproof materials",
        ),
        uses=("a balcony garden", "growing tomatoes", "pruning roses", "indoor herbs"),
        thing=("planter", "pair of pruning shears", "garden tool set"),
        things=("gardening tools", "planters", "garden supplies"),
        fans=("gardener", "plant lover", "weekend gardener"),
        prices=("15", "35", "60"),
    ),
    _CategoryTemplate(
        name="laptops",
        brands=("Voltbook", "Corelight", "Quantix", "Slateworks"),
        adjectives=("Ultrathin", "Gaming", "2-in-1", "Business", "Student"),
        nouns=("Laptop", "Notebook", "Convertible", "Workstation"),
        features=("an all-day battery", "a backlit keyboard", "a high-refresh display"),
        uses=("video editing", "college", "programming", "remote work"),
        thing=("laptop", "notebook computer", "gaming laptop"),
        things=("laptops", "notebooks", "gaming laptops"),
        fans=("student", "programmer", "gamer"),
        prices=("500", "900", "1500"),
    ),
    _CategoryTemplate(
        name="cycling",
        brands=("Spokewise", "Velocity Works", "Roadhawk", "Gearline"),
        adjectives=("Aero", "Carbon", "Commuter", "Gravel", "Mountain"),
        nouns=("Bike Helmet", "Bike Light", "Cycling Jersey", "Saddle"),
        features=(
            "a lightweight shell",
            "a rechargeable battery",
            "moisture-wicking fabric",
        ),
        uses=("commuting to work", "long road rides", "mountain biking", "night rides"),
        thing=("bike helmet", "bike light", "cycling jersey"),
        things=("cycling accessories", "bike helmets", "bike lights"),
        fans=("cyclist", "bike commuter", "mountain biker"),
        prices=("30", "70", "150"),
    ),
    _CategoryTemplate(
        name="home office",
        brands=("Deskcraft", "Ergomax", "Workhaven", "Posturo"),
        adjectives=("Ergonomic", "Standing", "Adjustable", "Mesh", "Minimal"),
        nouns=("Office Chair", "Standing Desk", "Monitor Arm", "Desk Lamp"),
        features=(
            "adjustable lumbar support",
            "a quiet dual motor",
            "a sturdy steel frame",
        ),
        uses=(
            "working from home",
            "long hours at a desk",
            "back pain",
            "a small apartment",
        ),
        thing=("office chair", "standing desk", "monitor arm"),
        things=("office chairs", "desks for home", "ergonomic accessories"),
        fans=("remote worker", "freelancer", "home office worker"),
        prices=("100", "300", "600"),
    ),
    _CategoryTemplate(
        name="tea",
        brands=("Leaf & Kettle", "Jadeleaf", "Steepwell", "Chai House"),
        adjectives=("Loose-Leaf", "Green", "Herbal", "Earl Grey", "Oolong"),
        nouns=("Tea Tin", "Tea Sampler", "Teapot", "Tea Infuser"),
        features=(
            "hand-picked leaves",
            "a calming floral aroma",
            "a reusable fine-mesh strainer",
        ),
        uses=("afternoon tea", "better sleep", "a cozy evening", "iced tea"),
        thing=("tea sampler", "loose-leaf tea", "teapot"),
        things=("teas", "herbal teas", "tea sets"),
        fans=("tea lover", "tea drinker", "matcha fan"),
        prices=("10", "25", "45"),
    ),
    _CategoryTemplate(
        name="watches",
        brands=("Chronos", "Tidewell", "Meridian", "Horologe"),
        adjectives=("Automatic", "Chronograph", "Dive", "Minimalist", "Solar"),
        nouns=("Wristwatch", "Field Watch", "Dress Watch", "Smartwatch"),
        features=(
            "sapphire crystal glass",
            "water resistance to 100m",
            "a stainless steel bracelet",
        ),
        uses=("everyday wear", "diving", "formal events", "fitness tracking"),
        thing=("watch", "wristwatch", "dive watch"),
        things=("watches", "wristwatches", "smartwatches"),
        fans=("watch collector", "watch enthusiast", "gadget fan"),
        prices=("100", "250", "500"),
    ),
    _CategoryTemplate(
        name="building toys",
        brands=("Brickly", "Playforge", "Tinkertots", "Wonderblock"),
        adjectives=("Magnetic", "Wooden", "STEM", "Rainbow", "Jumbo"),
        nouns=("Building Set", "Puzzle Cube", "Robot Kit", "Train Set"),
        features=(
            "non-toxic paint",
            "hundreds of interlocking pieces",
            "step-by-step instructions",
        ),
        uses=("a five-year-old", "rainy days", "learning to code", "toddlers"),
        thing=("building set", "educational toy", "robot kit"),
        things=("toys", "building blocks", "educational toys"),
        fans=("curious kid", "young builder", "little engineer"),
        prices=("20", "40", "75"),
    ),
)

# Shared across intents on purpose: the intent lives in the slot fillers, so a classifier must learn
# the vocabulary, not the sentence frame.
QUERY_TEMPLATES: tuple[str, ...] = (
    "looking for {quality} {things} under ${price}",
    "need a gift for my {fan} friend",
    "what's a good {thing} for {use}",
    "best {things} for {use}?",
    "any {brand} {things} on sale?",
    "recommend some {quality} {things}",
    "{quality} {things} for {use}",
    "cheap {things} for {use}",
    "gift ideas for {a_fan} under ${price}",
    "which {thing} should i buy for {use}?",
    "do you have {quality} {things} in stock?",
    "my friend is {a_fan}, what should i get them?",
    "{thing} recommendations for {use}",
    "is {brand} good for {things}?",
)

DESCRIPTION_TEMPLATES: tuple[str, ...] = (
    "The {title} is made for {use} and features {feature}.",
    "{brand} built this {adjective} {noun} with {feature}.",
    "Ideal for {use}, this {noun} from {brand} offers {feature}.",
    "A favourite among {fan}s, the {title} brings {feature}.",
)


def _as_typed(phrase: str) -> str:
    """Lower a title-case phrase as a shopper would type it, keeping acronyms (5G, STEM, Vitamin C)."""

    def lower_unless_acronym(match: re.Match[str]) -> str:
        word = match.group()
        is_acronym = len(word) == 1 or word[1:] != word[1:].lower() or any(c.isdigit() for c in word)
        return word if is_acronym else word.lower()

    return re.sub(r"[A-Za-z0-9]+", lower_unless_acronym, phrase)


class _Pool:
    """One vocabulary field of every category, flattened so rows can draw from their own category."""

    def __init__(self, values_per_category: Sequence[Sequence[str]]) -> None:
        self.counts = np.array([len(values) for values in values_per_category], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)[:-1]])
        self.values = np.array([v for values in values_per_category for v in values], dtype=object)

    def draw(self, rng: np.random.Generator, category: np.ndarray) -> np.ndarray:
        """One uniformly drawn value of each row's category."""
        slot = (rng.random(category.shape) * self.counts[category]).astype(np.int64)
        return self.values[self.offsets[category] + slot]

    def at(self, category: np.ndarray, slot: np.ndarray) -> np.ndarray:
        """The ``slot``-th value of each row's category (``slot`` below that category's count)."""
        return self.values[self.offsets[category] + slot]


def _render(templates: Sequence[str], template_idx: np.ndarray, slots: Mapping[str, np.ndarray]) -> np.ndarray:
    """Fill each row's template with that row's slot values, one vectorised pass per template."""
    rendered = np.empty(len(template_idx), dtype=object)
    for t, template in enumerate(templates):
        rows = np.flatnonzero(template_idx == t)
        text = np.full(len(rows), "", dtype=object)
        for literal, slot_name, _, _ in string.Formatter().parse(template):
            text = text + literal
            if slot_name is not None:
                text = text + slots[slot_name][rows]
        rendered[rows] = text
    return rendered


def _with_article(phrases: np.ndarray) -> np.ndarray:
    starts_with_vowel = pd.Series(phrases).str[0].str.lower().isin(list("aeiou")).to_numpy()
    return np.where(starts_with_vowel, "an ", "a ").astype(object) + phrases


def _sample_categorical(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One draw per row of ``probs`` (last axis = outcomes, rows need not be normalised)."""
    cumulative = np.cumsum(probs, axis=-1)
    threshold = rng.random((*probs.shape[:-1], 1)) * cumulative[..., -1:]
    return np.minimum((cumulative < threshold).sum(axis=-1), probs.shape[-1] - 1)


def _zero_padded_ids(prefix: str, count: int, min_width: int) -> np.ndarray:
    width = max(min_width, len(str(count)))
    numbers = pd.Series(np.arange(1, count + 1)).astype(str).str.zfill(width)
    return (prefix + numbers).to_numpy(dtype=object)


def _check_range(name: str, bounds: tuple[int, int], minimum: int) -> None:
    low, high = bounds
    if not minimum <= low <= high:
        raise RecsysError(
            f"{name}={tuple(bounds)} is not a valid inclusive range; use (low, high) with {minimum} <= low <= high."
        )


def _validate(
    n_users: int,
    n_categories: int,
    items_per_category: int,
    sessions_per_user: tuple[int, int],
    session_length: tuple[int, int],
    follow_prob: float,
) -> None:
    if n_users < 1:
        raise RecsysError(f"n_users={n_users} must be at least 1.")
    if not 1 <= n_categories <= len(CATEGORY_TEMPLATES):
        raise RecsysError(
            f"n_categories={n_categories} is out of range; "
            f"the synthetic shop has between 1 and {len(CATEGORY_TEMPLATES)} categories."
        )
    if items_per_category < _MAX_FOLLOW_UPS + 1:
        raise RecsysError(
            f"items_per_category={items_per_category} is too small; use at least "
            f"{_MAX_FOLLOW_UPS + 1} so every item has distinct follow-ups."
        )
    _check_range("sessions_per_user", sessions_per_user, minimum=1)
    _check_range("session_length", session_length, minimum=1)
    if not 0.0 <= follow_prob <= 1.0:
        raise RecsysError(f"follow_prob={follow_prob} must lie between 0 and 1.")


def _build_items(
    rng: np.random.Generator,
    templates: Sequence[_CategoryTemplate],
    items_per_category: int,
) -> pd.DataFrame:
    """Item table: titles are distinct brand x adjective x noun combinations within a category."""
    n_categories = len(templates)
    brands = _Pool([t.brands for t in templates])
    adjectives = _Pool([t.adjectives for t in templates])
    nouns = _Pool([t.nouns for t in templates])
    n_combos = brands.counts * adjectives.counts * nouns.counts

    # A random permutation of each category's title grid; invalid cells (small grids) sort last.
    keys = rng.random((n_categories, int(n_combos.max())))
    keys[np.arange(keys.shape[1])[None, :] >= n_combos[:, None]] = np.inf
    combo_order = np.argsort(keys, axis=1)

    category = np.repeat(np.arange(n_categories), items_per_category)
    rank_in_category = np.tile(np.arange(items_per_category), n_categories)
    combo = combo_order[category, rank_in_category % n_combos[category]]
    # Categories with more items than title combinations reuse them with a model number.
    variant = rank_in_category // n_combos[category]

    brand_slot = combo % brands.counts[category]
    adjective_slot = (combo // brands.counts[category]) % adjectives.counts[category]
    noun_slot = combo // (brands.counts[category] * adjectives.counts[category])
    brand = brands.at(category, brand_slot)
    adjective = adjectives.at(category, adjective_slot)
    noun = nouns.at(category, noun_slot)
    suffix = np.where(variant > 0, " " + (variant + 1).astype(str).astype(object), "").astype(object)
    title = brand + " " + adjective + " " + noun + suffix

    slots = {
        "title": title,
        "brand": brand,
        "adjective": _Pool([[_as_typed(a) for a in t.adjectives] for t in templates]).at(category, adjective_slot),
        "noun": _Pool([[_as_typed(n) for n in t.nouns] for t in templates]).at(category, noun_slot),
        "feature": _Pool([t.features for t in templates]).draw(rng, category),
        "use": _Pool([t.uses for t in templates]).draw(rng, category),
        "fan": _Pool([t.fans for t in templates]).draw(rng, category),
    }
    description_idx = rng.integers(0, len(DESCRIPTION_TEMPLATES), size=len(category))
    text = _render(DESCRIPTION_TEMPLATES, description_idx, slots)

    n_items = len(category)
    category_names = np.array([t.name for t in templates], dtype=object)
    return pd.DataFrame(
        {
            ITEM: _zero_padded_ids("i", n_items, min_width=4),
            TITLE: title,
            TEXT: text,
            CATEGORY: category_names[category],
        }
    )


def _intent_transitions(rng: np.random.Generator, n_intents: int) -> np.ndarray:
    """Row-stochastic matrix: each intent has 2-3 likely successors plus a little uniform mass."""
    n_successors = np.minimum(rng.integers(2, 4, size=n_intents), n_intents)
    successor_rank = np.argsort(np.argsort(rng.random((n_intents, n_intents)), axis=1), axis=1)
    weights = np.where(
        successor_rank < n_successors[:, None],
        rng.uniform(0.5, 1.5, (n_intents, n_intents)),
        0.0,
    )
    weights /= weights.sum(axis=1, keepdims=True)
    return _SUCCESSOR_MASS * weights + (1.0 - _SUCCESSOR_MASS) / n_intents


def _follow_ups(rng: np.random.Generator, n_categories: int, items_per_category: int) -> tuple[np.ndarray, np.ndarray]:
    """For every item, up to three distinct other items of its category and how many it uses (2-3)."""
    n_items = n_categories * items_per_category
    keys = rng.random((n_items, items_per_category))
    keys[np.arange(n_items), np.arange(n_items) % items_per_category] = np.inf  # never itself
    picks = np.argsort(keys, axis=1)[:, :_MAX_FOLLOW_UPS]
    follow_up_items = (np.arange(n_items) // items_per_category)[:, None] * items_per_category + picks
    n_follow_ups = rng.integers(2, _MAX_FOLLOW_UPS + 1, size=n_items)
    return follow_up_items, n_follow_ups


def generate_shop(
    n_users: int = 2000,
    n_categories: int = 12,
    items_per_category: int = 40,
    sessions_per_user: tuple[int, int] = (3, 8),
    session_length: tuple[int, int] = (1, 6),
    follow_prob: float = 0.7,
    seed: int = 0,
) -> SourceData:
    """Generate the synthetic shop: sessions of clicks with intents, items, and session queries.

    Args:
        n_users: number of users.
        n_categories: number of categories, which are also the latent intents (at most
            ``len(CATEGORY_TEMPLATES)``).
        items_per_category: items in each category.
        sessions_per_user: inclusive range the number of sessions of each user is drawn from.
        session_length: inclusive range the number of items in each session is drawn from.
        follow_prob: probability that the next item in a session is a follow-up of the previous one
            rather than a popularity draw from the session's category.
        seed: seed of ``numpy.random.default_rng``; equal seeds give identical tables.

    Returns:
        ``SourceData`` with ``interactions`` (user_id, item_id, timestamp, session_id, intent; sorted
        by user then time), ``items`` (item_id, title, text, category), and ``extra["queries"]``
        (session_id, user_id, timestamp, query, intent), one query per session.
    """
    _validate(
        n_users,
        n_categories,
        items_per_category,
        sessions_per_user,
        session_length,
        follow_prob,
    )
    rng = np.random.default_rng(seed)
    templates = CATEGORY_TEMPLATES[:n_categories]
    category_names = np.array([t.name for t in templates], dtype=object)

    # --- the world: items, popularity, follow-ups, intent dynamics ---
    items = _build_items(rng, templates, items_per_category)
    zipf_cdf = np.cumsum(1.0 / np.arange(1, items_per_category + 1) ** _ZIPF_EXPONENT)
    zipf_cdf /= zipf_cdf[-1]
    # items_by_popularity[c, r]: the item of category c with popularity rank r (ids don't leak rank).
    items_by_popularity = np.arange(n_categories)[:, None] * items_per_category + np.argsort(
        rng.random((n_categories, items_per_category)), axis=1
    )
    follow_up_items, n_follow_ups = _follow_ups(rng, n_categories, items_per_category)
    transitions = _intent_transitions(rng, n_categories)
    preferences = rng.dirichlet(np.full(n_categories, _PREFERENCE_CONCENTRATION), size=n_users)

    # --- sessions and intents: arrays [user, session], padded to the longest user ---
    max_sessions, max_length = sessions_per_user[1], session_length[1]
    n_sessions = rng.integers(sessions_per_user[0], sessions_per_user[1] + 1, size=n_users)
    lengths = rng.integers(session_length[0], session_length[1] + 1, size=(n_users, max_sessions))
    intent = np.empty((n_users, max_sessions), dtype=np.int64)
    intent[:, 0] = _sample_categorical(rng, preferences)
    for s in range(1, max_sessions):
        intent[:, s] = _sample_categorical(rng, transitions[intent[:, s - 1]])

    # --- clicks: arrays [user, session, position] ---
    popular_rank = np.searchsorted(zipf_cdf, rng.random((n_users, max_sessions, max_length)))
    popular_item = items_by_popularity[intent[:, :, None], popular_rank]
    follows = rng.random((n_users, max_sessions, max_length)) < follow_prob
    follow_slot = rng.random((n_users, max_sessions, max_length))
    item = np.empty((n_users, max_sessions, max_length), dtype=np.int64)
    item[:, :, 0] = popular_item[:, :, 0]
    for p in range(1, max_length):
        previous = item[:, :, p - 1]
        chosen_slot = (follow_slot[:, :, p] * n_follow_ups[previous]).astype(np.int64)
        item[:, :, p] = np.where(
            follows[:, :, p],
            follow_up_items[previous, chosen_slot],
            popular_item[:, :, p],
        )

    session_valid = np.arange(max_sessions)[None, :] < n_sessions[:, None]
    click_valid = session_valid[:, :, None] & (np.arange(max_length)[None, None, :] < lengths[:, :, None])

    # --- time: seconds between clicks, hours to days between sessions, staggered user starts ---
    click_gap = _MIN_CLICK_GAP_SECONDS + rng.exponential(
        _MEAN_CLICK_GAP_SECONDS, (n_users, max_sessions, max_length)
    ).astype(np.int64)
    click_gap[:, :, 0] = 0
    click_offset = np.cumsum(np.where(click_valid, click_gap, 0), axis=2)
    session_duration = click_offset[:, :, -1]
    session_gap = _HOUR + rng.exponential(_MEAN_SESSION_GAP_DAYS * _DAY, (n_users, max_sessions))
    user_start = _EPOCH_START + rng.integers(0, _USER_START_SPREAD_DAYS * _DAY, size=n_users)
    start_increment = session_gap.astype(np.int64)
    start_increment[:, 0] = user_start
    start_increment[:, 1:] += session_duration[:, :-1]
    session_start = np.cumsum(start_increment, axis=1)
    click_time = session_start[:, :, None] + click_offset

    session_id = np.where(session_valid, np.cumsum(session_valid.ravel()).reshape(n_users, -1) - 1, -1)
    user_ids = _zero_padded_ids("u", n_users, min_width=5)
    item_ids = items[ITEM].to_numpy(dtype=object)
    user_index = np.broadcast_to(np.arange(n_users)[:, None], (n_users, max_sessions))

    # Boolean masks flatten in C order, so rows come out sorted by user, session, position = time.
    interactions = pd.DataFrame(
        {
            USER: user_ids[np.broadcast_to(user_index[:, :, None], click_valid.shape)[click_valid]],
            ITEM: item_ids[item[click_valid]],
            TIME: click_time[click_valid].astype(np.int64),
            SESSION: np.broadcast_to(session_id[:, :, None], click_valid.shape)[click_valid],
            INTENT: np.broadcast_to(category_names[intent][:, :, None], click_valid.shape)[click_valid],
        }
    )

    # --- queries: one per session, a few seconds before its first click ---
    query_intent = intent[session_valid]
    n_queries = len(query_intent)
    fans = _Pool([t.fans for t in templates]).draw(rng, query_intent)
    slots = {
        "quality": _Pool([[_as_typed(a) for a in t.adjectives] for t in templates]).draw(rng, query_intent),
        "thing": _Pool([t.thing for t in templates]).draw(rng, query_intent),
        "things": _Pool([t.things for t in templates]).draw(rng, query_intent),
        "use": _Pool([t.uses for t in templates]).draw(rng, query_intent),
        "fan": fans,
        "a_fan": _with_article(fans),
        "brand": _Pool([t.brands for t in templates]).draw(rng, query_intent),
        "price": _Pool([t.prices for t in templates]).draw(rng, query_intent),
    }
    query_text = _render(QUERY_TEMPLATES, rng.integers(0, len(QUERY_TEMPLATES), size=n_queries), slots)
    query_lead = rng.integers(3, 30, size=n_queries)
    queries = pd.DataFrame(
        {
            SESSION: session_id[session_valid],
            USER: user_ids[user_index[session_valid]],
            TIME: (session_start[session_valid] - query_lead).astype(np.int64),
            QUERY: query_text,
            INTENT: category_names[query_intent],
        }
    )
    return SourceData(interactions=interactions, items=items, users=None, extra={"queries": queries})
