"""evomath: self-evolving small math models (rStar-Math, AlphaMath, Math-Shepherd)."""

__version__ = "0.1.0"
