#!/usr/bin/env python3
"""A reference scoring server for ctxzip's live tests: llama.cpp (through llama-cpp-python's
library, the same GGUF as the local engine) behind a small standard-library HTTP server that
answers `POST /v1/completions` with vLLM's `prompt_logprobs` shape and lists its model under
`GET /v1/models`.

Why not llama-cpp-python's own server: its completions request takes text prompts only (a
token-id array is refused) and its `echo` log-probabilities are read one token late (token
i's from the logits after token i; upstream issues abetlen/llama-cpp-python#1276, #1983).
vLLM, the server ctxzip is meant for, needs a GPU. This computes what vLLM computes for
`prompt_logprobs`: the log-probability of each prompt token given the tokens before it.

    reference_server.py PORT_FILE --model FILE.gguf [--alias NAME] [--n-ctx N] [--threads N]

The chosen port is written to PORT_FILE once the model is loaded and the server listens.
Requests are served one at a time (one llama.cpp context), as a single-GPU engine would
queue them.
"""

import argparse
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from llama_cpp import Llama

parser = argparse.ArgumentParser()
parser.add_argument("port_file")
parser.add_argument("--model", required=True)
parser.add_argument("--alias", default="smollm2")
parser.add_argument("--n-ctx", type=int, default=2048)
parser.add_argument("--threads", type=int, default=1)
# Accepted for the tests' launcher; this server keeps no counters.
parser.add_argument("--stats", default=None)
args = parser.parse_args()

# logits_all: the logits of every prompt position are kept, which prompt log-probabilities
# need. Flash attention off, as in ctxzip's local engine.
llm = Llama(
    model_path=args.model,
    logits_all=True,
    n_ctx=args.n_ctx,
    n_batch=512,
    n_threads=args.threads,
    n_threads_batch=args.threads,
    flash_attn=False,
    verbose=False,
)
lock = threading.Lock()


def prompt_logprobs(tokens):
    """vLLM's `prompt_logprobs` with 0 alternatives: per token, None for the first, else
    {token_id: {logprob, rank, decoded_token}} given the tokens before it."""
    with lock:
        llm.reset()
        llm.eval(tokens)
        rows = np.array(llm.scores[: len(tokens) - 1], dtype=np.float64)
    top = rows.max(axis=1, keepdims=True)
    logsoftmax = rows - top - np.log(np.exp(rows - top).sum(axis=1, keepdims=True))
    out = [None]
    for i in range(1, len(tokens)):
        row = logsoftmax[i - 1]
        token = tokens[i]
        logprob = float(row[token])
        piece = llm.detokenize([token]).decode("utf-8", errors="replace")
        out.append(
            {str(token): {"logprob": logprob, "rank": int((row > logprob).sum()) + 1, "decoded_token": piece}}
        )
    return out


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def send_json(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path.rstrip("/").endswith("/models"):
            self.send_json(200, {"object": "list", "data": [{"id": args.alias, "object": "model"}]})
        else:
            self.send_json(404, {"error": {"message": "not found"}})

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        request = json.loads(self.rfile.read(length) or b"{}")
        if request.get("model") != args.alias:
            model = request.get("model")
            self.send_json(404, {"error": {"message": f"The model `{model}` does not exist."}})
            return
        prompt = request.get("prompt")
        if not isinstance(prompt, list) or not prompt or not all(isinstance(t, int) for t in prompt):
            self.send_json(400, {"error": {"message": "prompt must be a non-empty list of token ids"}})
            return
        if len(prompt) > args.n_ctx:
            self.send_json(400, {"error": {"message": f"prompt of {len(prompt)} tokens is longer than {args.n_ctx}"}})
            return
        choice = {"index": 0, "text": "", "logprobs": None, "finish_reason": "length"}
        if request.get("prompt_logprobs") is not None:
            choice["prompt_logprobs"] = prompt_logprobs(prompt)
        usage = {"prompt_tokens": len(prompt), "completion_tokens": 0, "total_tokens": len(prompt)}
        self.send_json(200, {"id": "cmpl-ref", "object": "text_completion", "model": args.alias, "choices": [choice], "usage": usage})


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
with open(args.port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.replace(args.port_file + ".tmp", args.port_file)
server.serve_forever()
