"""Workflows written once for every modality: harvest, SAE training, experiments, the demo."""
