"""Time to first chunk and end to end of the same requests over gRPC and over HTTP (SSE).

One request at a time against a running `mmntp serve --port P --http-port H`, the two
transports alternating so that both see the same machine load; prints a markdown table
(p50 / p90 milliseconds). Usage:

    python3 scripts/bench_http.py --grpc 127.0.0.1:50053 --http http://127.0.0.1:8080 -n 20
"""

from __future__ import annotations

import argparse
import statistics
import time

import grpc
import httpx
from google.protobuf import json_format

from mmntp.v1 import generation_pb2 as pb
from mmntp.v1 import generation_pb2_grpc

CONTEXT = [10.0 + (i % 12) for i in range(96)]
BODIES = {
    "text (32 tokens)": {
        "prompt": [{"text": "The weather "}],
        "output": {"text": {"maxTokens": 32}},
        "sampling": {"seed": 0},
    },
    "forecast (horizon 12, 8 paths)": {
        "prompt": [{"timeseries": {"values": CONTEXT}}],
        "output": {"timeseries": {"horizon": 12, "numSamples": 8}},
        "sampling": {"seed": 0},
    },
    "image (32x32, 4 PNG previews)": {
        "prompt": [{"text": "a red circle on a blue background"}],
        "output": {"image": {}},
        "sampling": {"seed": 0},
    },
}


def over_grpc(stub, body: dict) -> tuple[float, float]:
    start, first = time.perf_counter(), None
    for _ in stub.Generate(json_format.ParseDict(body, pb.GenerateRequest()), timeout=60):
        first = first or time.perf_counter()
    return first - start, time.perf_counter() - start


def over_http(client: httpx.Client, body: dict) -> tuple[float, float]:
    start, first = time.perf_counter(), None
    with client.stream("POST", "/v1/generate", json=body | {"stream": True}) as reply:
        reply.raise_for_status()
        for line in reply.iter_lines():
            if line.startswith("data: "):
                first = first or time.perf_counter()
    return first - start, time.perf_counter() - start


def ms(samples: list[float]) -> str:
    cuts = statistics.quantiles(samples, n=10)
    return f"{statistics.median(samples) * 1e3:.0f} / {cuts[8] * 1e3:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grpc", required=True, metavar="HOST:PORT")
    parser.add_argument("--http", required=True, metavar="URL")
    parser.add_argument("-n", type=int, default=20, help="requests per modality and transport")
    args = parser.parse_args()
    print("| request | transport | first chunk p50 / p90 ms | end to end p50 / p90 ms |")
    print("|---|---|---|---|")
    with grpc.insecure_channel(args.grpc) as channel, httpx.Client(base_url=args.http) as http:
        stub = generation_pb2_grpc.GenerationServiceStub(channel)
        for name, body in BODIES.items():
            runs = {"gRPC": [], "HTTP SSE": []}
            over_grpc(stub, body), over_http(http, body)  # connections up, caches warm
            for _ in range(args.n):
                runs["gRPC"].append(over_grpc(stub, body))
                runs["HTTP SSE"].append(over_http(http, body))
            for transport, times in runs.items():
                firsts, totals = [t[0] for t in times], [t[1] for t in times]
                print(f"| {name} | {transport} | {ms(firsts)} | {ms(totals)} |")


if __name__ == "__main__":
    main()
