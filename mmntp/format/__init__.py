"""How each modality is written into the one token sequence (training and inference)."""
