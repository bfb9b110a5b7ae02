"""The result of a cell, one typed definition (schema v2), and its verdict rendered in one place."""
