"""The gRPC edge: protobuf <-> domain conversion, error mapping, the servicer and the server."""
