"""What a team decides with results: the diff of two sets of cells, the regression gate, and the upgrade answer."""
