"""Robustness: hostile input, property tests, a fuzz run and faults, against real processes."""
