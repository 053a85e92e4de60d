"""Training a LoRA or LoKr for the DiT from a folder of songs: dataset checks (``dataset``), the
cached preparation (``prepare``), the trainer (``trainer``), the adapter's format (``adapter``) and
the command line (``python -m training``)."""
