"""The registry owns the controller's state and its rules. It knows no protobuf and no SQL."""
