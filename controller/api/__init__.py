"""The gRPC edge: the only layer that speaks protobuf. Servicers translate and delegate."""
