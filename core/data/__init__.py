"""Data on disk: the embedded-artifact catalogue, model manifests, named corpora and package fetching."""
