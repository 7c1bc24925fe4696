"""Anomaly detection: baselines per route and consumer, detections, and what is done with them."""
