"""Data contracts, validation, the synthetic world and real-catalog import."""
