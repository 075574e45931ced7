"""Synthetic worlds with pixel oracles: clips anyone can make and score without a learned metric.

``shapes``: one coloured shape moving on a plain background (64×64), the world of the tiny model
and of ``--metrics oracle``. ``scenes``: one or two objects on plain or textured, possibly
panning, backgrounds (96×96).
"""
