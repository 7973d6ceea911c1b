"""Tilt-series alignment kernels: coarse cross-correlation, gold-bead detection and tracking, bundle adjustment.

Every kernel follows CONVENTIONS.md §6 (IMOD ``.xf`` meaning about centres ``N // 2``) and §7 (the projection model).
"""
