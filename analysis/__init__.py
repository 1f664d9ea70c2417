"""Offline analysis of served traffic: A/B experiments, interleaving, off-policy estimates."""
