"""A model API double: the HTTP APIs the agents call, answering every
prompt with one fixed reply.

    python3 model_double.py ADDR PORT LOG REPLY

Speaks, well enough for the real clients (Claude Code, Codex, OpenClaw's
providers):
  - Anthropic Messages: POST /v1/messages (JSON, or SSE with "stream"),
    POST /v1/messages/count_tokens;
  - OpenAI Responses: POST /v1/responses (JSON, or SSE with "stream");
  - OpenAI Chat Completions: POST /v1/chat/completions (JSON or SSE);
  - GET /v1/models (a list with one model).
Anything else is 404 with an error body the SDKs understand.

Every request is appended to LOG as one JSON line {method, path, headers,
body} (body parsed when it is JSON), so a test can check what a real
agent sent: its key, its model, its prompt. Prints "ready" once it
listens. The test runs it in a network namespace of its own.
"""
import http.server
import json
import socketserver
import sys
import threading
import time
import uuid

ADDR, PORT, LOG, REPLY = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
MODEL = "double-1"
log_lock = threading.Lock()


def record(method, path, headers, raw):
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = raw.decode(errors="replace")
    with log_lock, open(LOG, "a") as f:
        f.write(json.dumps({"method": method, "path": path, "headers": dict(headers),
                            "body": body}) + "\n")
    return body if isinstance(body, dict) else {}


def usage_anthropic():
    return {"input_tokens": 12, "output_tokens": 7, "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0}


def anthropic_message(model):
    return {"id": "msg_" + uuid.uuid4().hex[:24], "type": "message", "role": "assistant",
            "model": model, "content": [{"type": "text", "text": REPLY}],
            "stop_reason": "end_turn", "stop_sequence": None, "usage": usage_anthropic()}


def anthropic_events(model):
    msg = anthropic_message(model)
    start = dict(msg, content=[], stop_reason=None,
                 usage=dict(usage_anthropic(), output_tokens=1))
    yield "message_start", {"type": "message_start", "message": start}
    yield "content_block_start", {"type": "content_block_start", "index": 0,
                                  "content_block": {"type": "text", "text": ""}}
    yield "ping", {"type": "ping"}
    yield "content_block_delta", {"type": "content_block_delta", "index": 0,
                                  "delta": {"type": "text_delta", "text": REPLY}}
    yield "content_block_stop", {"type": "content_block_stop", "index": 0}
    yield "message_delta", {"type": "message_delta",
                            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                            "usage": {"output_tokens": 7}}
    yield "message_stop", {"type": "message_stop"}


def response_object(model, status, output):
    return {"id": "resp_" + uuid.uuid4().hex, "object": "response",
            "created_at": int(time.time()), "status": status, "model": model,
            "output": output, "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
            "usage": {"input_tokens": 12, "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens": 7, "output_tokens_details": {"reasoning_tokens": 0},
                      "total_tokens": 19}}


def response_message():
    return {"type": "message", "id": "msg_" + uuid.uuid4().hex, "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": REPLY, "annotations": []}]}


def responses_events(model):
    item = response_message()
    empty = dict(item, status="in_progress", content=[])
    part = {"type": "output_text", "text": "", "annotations": []}
    n = 0

    def ev(kind, **fields):
        nonlocal n
        n += 1
        return kind, dict({"type": kind, "sequence_number": n}, **fields)

    created = response_object(model, "in_progress", [])
    yield ev("response.created", response=created)
    yield ev("response.in_progress", response=created)
    yield ev("response.output_item.added", output_index=0, item=empty)
    yield ev("response.content_part.added", item_id=item["id"], output_index=0,
             content_index=0, part=part)
    yield ev("response.output_text.delta", item_id=item["id"], output_index=0,
             content_index=0, delta=REPLY)
    yield ev("response.output_text.done", item_id=item["id"], output_index=0,
             content_index=0, text=REPLY)
    yield ev("response.content_part.done", item_id=item["id"], output_index=0,
             content_index=0, part=dict(part, text=REPLY))
    yield ev("response.output_item.done", output_index=0, item=item)
    done = dict(created, status="completed", output=[item])
    yield ev("response.completed", response=done)


def chat_completion(model):
    return {"id": "chatcmpl-" + uuid.uuid4().hex, "object": "chat.completion",
            "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": REPLY},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}}


def chat_chunks(model):
    base = {"id": "chatcmpl-" + uuid.uuid4().hex, "object": "chat.completion.chunk",
            "created": int(time.time()), "model": model}
    yield None, dict(base, choices=[{"index": 0, "delta": {"role": "assistant", "content": ""},
                                     "finish_reason": None}])
    yield None, dict(base, choices=[{"index": 0, "delta": {"content": REPLY},
                                     "finish_reason": None}])
    yield None, dict(base, choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}],
                     usage={"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19})


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def send_json(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", "req_" + uuid.uuid4().hex[:20])
        self.end_headers()
        self.wfile.write(data)

    def send_sse(self, events, done_marker=False):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        for name, data in events:
            chunk = (f"event: {name}\n" if name else "") + f"data: {json.dumps(data)}\n\n"
            self.wfile.write(chunk.encode())
            self.wfile.flush()
        if done_marker:
            self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            return self.rfile.read(n)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return b""

    def do_GET(self):
        record("GET", self.path, self.headers, b"")
        path = self.path.split("?")[0]
        if path.endswith("/models"):
            self.send_json(200, {"object": "list", "data": [
                {"id": MODEL, "object": "model", "created": 0, "owned_by": "double",
                 "type": "model", "display_name": MODEL, "created_at": "2025-01-01T00:00:00Z"}],
                "has_more": False, "first_id": MODEL, "last_id": MODEL})
        else:
            self.not_found()

    def not_found(self):
        self.send_json(404, {"type": "error", "error": {"type": "not_found_error",
                                                        "message": "no such route"}})

    def do_POST(self):
        body = record("POST", self.path, self.headers, self.read_body())
        path = self.path.split("?")[0]
        model = body.get("model") or MODEL
        stream = bool(body.get("stream"))
        if path.endswith("/messages/count_tokens"):
            self.send_json(200, {"input_tokens": 12})
        elif path.endswith("/messages"):
            if stream:
                self.send_sse(anthropic_events(model))
            else:
                self.send_json(200, anthropic_message(model))
        elif path.endswith("/responses"):
            if stream:
                self.send_sse(responses_events(model))
            else:
                self.send_json(200, response_object(model, "completed", [response_message()]))
        elif path.endswith("/chat/completions"):
            if stream:
                self.send_sse(chat_chunks(model), done_marker=True)
            else:
                self.send_json(200, chat_completion(model))
        else:
            self.not_found()


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


srv = Server((ADDR, PORT), Handler)
print("ready", flush=True)
srv.serve_forever()
