"""The service: gRPC and HTTP servers over one core (core.py), auth, metrics, proto
conversion (`mmntp serve`)."""
