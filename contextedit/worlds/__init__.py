"""Synthetic worlds with pixel oracles: clips anyone can make and score without a learned metric.

``scenes``: one or two objects on plain or textured, possibly panning, backgrounds (96×96).
"""
