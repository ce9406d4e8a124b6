"""What both product lines share about artifacts: the versioned registry, promotion gates, the one
publish -> gate -> promote step, and content fingerprints. Knows neither product line."""
