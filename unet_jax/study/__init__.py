"""The layer-wise study: its sweep points, checks, leak check, runner and loop (runner first)."""
