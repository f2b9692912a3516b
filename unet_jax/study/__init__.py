"""The layer-wise study: its sweep points, checks, leak check and runner (runner first)."""
