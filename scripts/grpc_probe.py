#!/usr/bin/env python3
"""A small gRPC probe (no grpcurl here): standard health checking and the reflection listing.

    python scripts/grpc_probe.py 127.0.0.1:50051            # health, then services and methods
    python scripts/grpc_probe.py 127.0.0.1:50051 --wait 60  # wait until SERVING (startup probes)

Exit status: 0 when the server (and --service) is SERVING, 1 when it answers anything else,
2 when it cannot be reached. Needs grpcio, grpcio-health-checking and grpcio-reflection only.
"""

from __future__ import annotations

import argparse
import sys
import time

import grpc
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

DEFAULT_SERVICE = "sonovec.v1.Sonovec"


def health(channel: grpc.Channel, service: str, timeout: float) -> str:
    """The status name (SERVING, NOT_SERVING, SERVICE_UNKNOWN, ...) of ``service`` ("" = the server)."""
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:  # type: ignore[attr-defined]
            return "SERVICE_UNKNOWN"
        raise
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def _reflect(
    channel: grpc.Channel, requests: list[reflection_pb2.ServerReflectionRequest], timeout: float
) -> list:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    return list(stub.ServerReflectionInfo(iter(requests), timeout=timeout))


def services(channel: grpc.Channel, timeout: float) -> dict[str, list[str]]:
    """Every service the server lists by reflection, with its methods (read from the file
    descriptors the server sends back)."""
    listing = _reflect(channel, [reflection_pb2.ServerReflectionRequest(list_services="")], timeout)[0]
    names = sorted(s.name for s in listing.list_services_response.service)
    requests = [reflection_pb2.ServerReflectionRequest(file_containing_symbol=n) for n in names]
    methods: dict[str, list[str]] = {name: [] for name in names}
    for reply in _reflect(channel, requests, timeout):
        for blob in reply.file_descriptor_response.file_descriptor_proto:
            proto = descriptor_pb2.FileDescriptorProto.FromString(blob)
            for service in proto.service:
                full = f"{proto.package}.{service.name}" if proto.package else service.name
                if full in methods and not methods[full]:
                    methods[full] = [m.name for m in service.method]
    return methods


def probe(target: str, service: str, wait: float, timeout: float, list_services: bool) -> int:
    deadline = time.monotonic() + wait
    with grpc.insecure_channel(target) as channel:
        while True:
            try:
                overall, own = health(channel, "", timeout), health(channel, service, timeout)
            except grpc.RpcError as exc:
                overall = own = f"unreachable ({exc.code().name})"  # type: ignore[attr-defined]
            serving = overall == own == "SERVING"
            if serving or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        print(f"health {target} (server): {overall}")
        print(f"health {service}: {own}")
        if overall.startswith("unreachable"):
            return 2
        if list_services:
            listed = services(channel, timeout)
            print(f"reflection: {len(listed)} services")
            for name, names in listed.items():
                print(f"  {name}: {', '.join(names)}")
    return 0 if serving else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("target", nargs="?", default="127.0.0.1:50051", help="host:port of the gRPC server")
    parser.add_argument("--service", default=DEFAULT_SERVICE, help="service whose health to check too")
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to wait for SERVING")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per call")
    parser.add_argument(
        "--no-list", dest="list_services", action="store_false", help="skip the reflection listing"
    )
    args = parser.parse_args(argv)
    return probe(args.target, args.service, args.wait, args.timeout, args.list_services)


if __name__ == "__main__":
    sys.exit(main())
