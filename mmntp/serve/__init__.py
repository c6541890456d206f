"""The gRPC service: servicer, server, auth, metrics, proto conversion (`mmntp serve`)."""
