"""Scoring predictions against references: overlap and surface-distance metrics on the physical grid."""
