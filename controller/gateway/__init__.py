"""The HTTP/JSON gateway: the original REST paths (`/api/v1/nodes`, ...) served by transcoding
from the `google.api.http` annotations into the controller's own gRPC services.

`routes.py` reads the annotations and matches paths, `transcode.py` turns HTTP into request
messages and responses into JSON, `errors.py` gives errors the Google API shape and status,
`server.py` is the aiohttp server that calls the gRPC server, `services.py` says what it serves."""
