#!/usr/bin/env python3
"""A small real HTTP server on 127.0.0.1 that speaks the OpenAI completions API the way a
scoring server does (the legacy `echo` + `logprobs` form, as llama-cpp-python's server), and
fails on purpose: the fault tests of ctxzip's remote scorer start it. Standard library only.

Every prompt token after the first gets log-probability -1.0, so answers are well formed
and scores are all equal; what the tests check is how the client behaves around them.

    fault_server.py PORT_FILE [--fault KIND] [--after N] [--times N] [--retry-after S]
                    [--delay S] [--stats FILE]

--fault: none | status-500 | status-429 | slow | no-logprobs | late-logprobs | close
    (late-logprobs: -12 for every token, what log-probabilities read one token late give)
    applied to completions requests after the first --after of them (the start-up probe
    sends one), at most --times times (default: always).
--stats: a JSON file rewritten on every request: requests, most in flight at once.
The chosen port is written to PORT_FILE once the server listens.
"""

import argparse
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "smollm2"

parser = argparse.ArgumentParser()
parser.add_argument("port_file")
parser.add_argument("--fault", default="none")
parser.add_argument("--after", type=int, default=0)
parser.add_argument("--times", type=int, default=-1)
parser.add_argument("--retry-after", default=None)
parser.add_argument("--delay", type=float, default=0.0)
parser.add_argument("--stats", default=None)
args = parser.parse_args()

lock = threading.Lock()
state = {"requests": 0, "completions": 0, "faults": 0, "in_flight": 0, "max_in_flight": 0}


def write_stats():
    if args.stats:
        with open(args.stats + ".tmp", "w") as f:
            json.dump(state, f)
        os.replace(args.stats + ".tmp", args.stats)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def send_json(self, status, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        with lock:
            state["requests"] += 1
            write_stats()
        if self.path.rstrip("/").endswith("/models"):
            self.send_json(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
        else:
            self.send_json(404, {"error": {"message": "not found"}})

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        request = json.loads(self.rfile.read(length) or b"{}")
        with lock:
            state["requests"] += 1
            state["completions"] += 1
            state["in_flight"] += 1
            state["max_in_flight"] = max(state["max_in_flight"], state["in_flight"])
            n = state["completions"]
            fault = args.fault
            if n <= args.after or (args.times >= 0 and state["faults"] >= args.times):
                fault = "none"
            if fault != "none":
                state["faults"] += 1
            write_stats()
        try:
            self.answer(request, fault)
        finally:
            with lock:
                state["in_flight"] -= 1
                write_stats()

    def answer(self, request, fault):
        if fault == "status-500":
            self.send_json(500, {"error": {"message": "CUDA out of memory (test fault)"}})
            return
        if fault == "status-429":
            headers = [("Retry-After", args.retry_after)] if args.retry_after else []
            self.send_json(429, {"error": {"message": "too many requests"}}, headers)
            return
        if fault == "close":
            self.close_connection = True
            self.connection.close()
            return
        if fault == "slow":
            time.sleep(args.delay)
        if request.get("model") != MODEL:
            self.send_json(404, {"error": {"message": f"The model `{request.get('model')}` does not exist."}})
            return
        prompt = request.get("prompt", [])
        if fault == "no-logprobs" or not request.get("echo"):
            choice = {"text": "\n", "index": 0, "logprobs": None, "finish_reason": "length"}
        else:
            choice = {
                "text": "",
                "index": 0,
                "logprobs": {
                    "tokens": [str(t) for t in prompt],
                    "text_offset": list(range(len(prompt))),
                    "token_logprobs": [None] + [-12.0 if fault == "late-logprobs" else -1.0] * (len(prompt) - 1),
                    "top_logprobs": [None] * len(prompt),
                },
                "finish_reason": "length",
            }
        self.send_json(200, {"id": "cmpl-test", "object": "text_completion", "model": MODEL, "choices": [choice]})


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
with open(args.port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.replace(args.port_file + ".tmp", args.port_file)
server.serve_forever()
