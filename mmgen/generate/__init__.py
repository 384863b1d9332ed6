"""Retrieval-augmented generators: images from text (and captions from images)."""
