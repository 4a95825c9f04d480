"""Server reflection that keeps the .proto comments, so that `grpcurl describe` shows what each
field means.

grpcio-reflection serializes descriptors with `CopyToProto`, which drops comments (source info),
and the descriptors compiled into *_pb2.py carry none anyway. `scripts/generate_protos.py` also
writes a descriptor set with source info (generated/automator67/v1/descriptors.binpb); this
servicer answers file requests from it, and from the default pool for everything else
(health, reflection, well-known types).

The descriptor set (~190 KB) is read and parsed on the first file request, not at start: most
controllers never see a reflection call. It is read with `pkgutil.get_data`, not
`importlib.resources`, whose import (zipfile, readers, ~5-17 ms of CPU) would be start-up cost."""

from __future__ import annotations

import pkgutil
from functools import cached_property
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool
from grpc import aio
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha._async import ReflectionServicer

DESCRIPTOR_SET = "descriptors.binpb"


class DocumentedReflectionServicer(ReflectionServicer):  # type: ignore[misc]
    def __init__(self, service_names: tuple[str, ...]) -> None:
        super().__init__(service_names)
        self._default = descriptor_pool.Default()

    @cached_property
    def _documented(self) -> dict[str, bytes]:
        """Each file of the descriptor set (with its comments), serialized, by name."""
        data = pkgutil.get_data("automator67.v1", DESCRIPTOR_SET)
        if data is None:  # a loader that cannot read package data
            raise FileNotFoundError(f"automator67.v1/{DESCRIPTOR_SET}")
        files = descriptor_pb2.FileDescriptorSet.FromString(data).file
        return {f.name: f.SerializeToString() for f in files}

    def _file_by_filename(self, request: Any, filename: str) -> Any:
        try:
            return self._response(self._default.FindFileByName(filename), request)
        except KeyError:
            return super()._file_by_filename(request, filename)

    def _file_containing_symbol(self, request: Any, fully_qualified_name: str) -> Any:
        try:
            return self._response(
                self._default.FindFileContainingSymbol(fully_qualified_name), request
            )
        except KeyError:
            return super()._file_containing_symbol(request, fully_qualified_name)

    def _response(self, file: Any, request: Any) -> reflection_pb2.ServerReflectionResponse:
        """The file and everything it imports, documented where we have the comments."""
        closure: dict[str, Any] = {}
        pending = [file]
        while pending:
            current = pending.pop()
            if current.name not in closure:
                closure[current.name] = current
                pending.extend(current.dependencies)
        serialized = []
        for name, descriptor in closure.items():
            if name in self._documented:
                serialized.append(self._documented[name])
            else:
                proto = descriptor_pb2.FileDescriptorProto()
                descriptor.CopyToProto(proto)
                serialized.append(proto.SerializeToString())
        return reflection_pb2.ServerReflectionResponse(
            file_descriptor_response=reflection_pb2.FileDescriptorResponse(
                file_descriptor_proto=serialized
            ),
            original_request=request,
        )


def enable(server: aio.Server, service_names: tuple[str, ...]) -> None:
    names = (*service_names, reflection.SERVICE_NAME)
    servicer = DocumentedReflectionServicer(names)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
