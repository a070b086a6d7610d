"""Perceptual quality: how an encoded image looks against the pixels it was made from.

``ssimulacra2``: the SSIMULACRA2 metric in vectorised NumPy (scores within ±1 of the reference package's);
``search``: the quality search behind ``"quality": "auto"`` (the lowest quality whose score reaches a floor).
"""
