"""Metrics: ranking (AUC, GAUC, logloss) and the intermediate metrics of the encoder."""
