"""Built-in modality plugins: text (transformers), image (diffusers), voice (torchaudio/VITS)."""
