"""The gRPC transport: a grpc.aio server over the one core service (``proto/sonovec/v1``).

Messages and stubs come from the ``sonovec-client`` distribution (``sonovec.v1``), generated from
the proto files at its build.
"""
