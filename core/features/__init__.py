"""Features and dictionaries: direction sets, sparse autoencoders, formats, fingerprints,
concept math, labels, feature search and feature classifiers."""
