"""The benchmark stage: measuring artifacts on a target and reading measurements back."""
