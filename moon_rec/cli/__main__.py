"""``python -m moon_rec.cli ...`` (and ``torchrun ... -m moon_rec.cli ...``) runs ``moon``."""

from moon_rec.cli import main

main()
