"""The Detect edit per output variant, found by the code shape of each ref (forks included)."""
