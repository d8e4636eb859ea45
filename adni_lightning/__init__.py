"""adni_lightning: CN / MCI / AD from FastSurfer label maps fused with age and sex (PyTorch Lightning)."""
