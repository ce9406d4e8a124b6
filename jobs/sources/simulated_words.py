"""The synthetic source's vocabulary (``jobs.simulate``): topics and their nouns, adjectives, query
tails, and the suffixes near-duplicate re-posts carry."""

TOPICS = {
    "recipes": ["pasta", "salad", "soup", "cookies", "curry", "smoothie", "bread", "tacos"],
    "decor": ["living room", "bedroom", "wall art", "rug", "lamp", "shelf", "mirror", "curtains"],
    "fashion": ["dress", "sneakers", "jacket", "handbag", "jeans", "scarf", "boots", "sweater"],
    "travel": ["beach", "road trip", "camping", "hotel", "city guide", "hiking", "island", "cabin"],
    "garden": ["succulents", "raised bed", "herbs", "roses", "patio", "planter", "tomatoes", "lawn"],
    "fitness": ["yoga", "workout", "running", "stretching", "pilates", "squats", "cardio", "abs"],
    "wedding": ["bouquet", "cake", "invitation", "veil", "centerpiece", "arch", "favors", "table"],
    "diy": ["crafts", "candles", "woodwork", "knitting", "macrame", "painting", "pottery", "sewing"],
    "beauty": ["nails", "makeup", "hairstyle", "skincare", "lipstick", "braids", "eyeliner", "serum"],
    "kids": ["birthday", "nursery", "toys", "lunchbox", "costume", "playroom", "games", "crafts"],
    "pets": ["dog bed", "cat tree", "aquarium", "puppy", "kitten", "collar", "treats", "grooming"],
    "tech": ["desk setup", "keyboard", "headphones", "phone case", "monitor", "laptop", "gadgets", "charger"],
}
ADJECTIVES = [
    "easy",
    "modern",
    "vintage",
    "cozy",
    "minimalist",
    "rustic",
    "boho",
    "healthy",
    "cute",
    "elegant",
    "budget",
    "colorful",
    "simple",
    "luxury",
    "summer",
    "winter",
    "spring",
    "autumn",
    "small",
    "classic",
]
TAILS = ["ideas", "inspiration", "tips", "guide", "for beginners", "hacks", "diy", "aesthetic", "2026", "trends"]
VARIANTS = ["(repost)", "- saved", "via pinner", "| favorite", "copy"]
