"""The gRPC wire contract: code generated from ``protos/taskmesh/v1/*.proto``.

``{name}_pb2`` modules hold the messages and enums, ``{name}_pb2_grpc`` the service stubs,
servicers and ``add_*Servicer_to_server`` functions; each has a mypy-protobuf ``.pyi`` stub.
Never edit them: change the ``.proto`` sources and run ``make protos`` (``protos/generate.py``).
"""
