"""Encoder training: pair building, contrastive objectives, negative samplers, trainer."""
