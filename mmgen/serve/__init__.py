"""`mmgen serve`: the HTTP API (clip-retrieval-compatible routes and mmgen's own) and the search page."""
