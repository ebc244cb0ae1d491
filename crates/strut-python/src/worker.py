"""strut's Python worker: runs one Truss model.py for the strut server.

The server starts this file with the model's Python, connects it to a Unix
socket (STRUT_WORKER_SOCKET), and supervises it. Frames both ways are a
4-byte big-endian length and a JSON object. Standard library only, so any
environment that can run the model can run the worker.

Server -> worker: first {"op": "init", "config", "model_dir", "secrets",
"environment"}; then {"op": "preprocess" | "predict" | "postprocess",
"id", "input"}, {"op": "health", "id"}, {"op": "cancel", "id"},
{"op": "ack", "id", "n"} (stream credit).
Worker -> server: {"op": "loaded", "methods": [...]}, {"op": "load_failed",
"error"}, and per request {"id", "ok": value}, {"id", "stream": true},
{"id", "chunk": text} or {"id", "chunk_b64": ...}, {"id", "end": true},
{"id", "err": {"status", "message"}}, {"id", "log": line, "level"}.
"""
import asyncio
import base64
import contextvars
import functools
import importlib
import inspect
import json
import logging
import os
import pathlib
import select
import struct
import sys
import threading
import time
import traceback
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

# The request whose work is running here, for log capture: asyncio tasks
# inherit it, executor threads get it through a copied context.
REQUEST = contextvars.ContextVar("strut_request", default=None)
# Truss's OpenAI-style methods: the server passes the request body through.
OPENAI_METHODS = ("chat_completions", "completions", "embeddings")
# What the server may ask for besides `health`.
SERVED = {"preprocess", "predict", "postprocess", "health"} | set(OPENAI_METHODS)
# Chunks a stream may run ahead of the server before it waits for credit.
STREAM_WINDOW = 16


class Channel:
    """Framed JSON to the server, writable from the loop and from threads."""

    def __init__(self, loop, writer):
        self.loop, self.writer = loop, writer

    def send(self, message):
        data = json.dumps(message, default=to_json).encode()
        frame = struct.pack(">I", len(data)) + data
        # Every frame goes through the loop's queue, so frames leave in the
        # order they were sent from any thread: a request's last log lines
        # before its reply, which ends the request on the server.
        if threading.current_thread() is threading.main_thread():
            self.loop.call_soon(self.writer.write, frame)
        else:
            self.loop.call_soon_threadsafe(self.writer.write, frame)


def to_json(value):
    """What Truss's server serialises beyond plain JSON."""
    if hasattr(value, "model_dump"):  # pydantic v2
        return value.model_dump(mode="json")
    if hasattr(value, "dict") and hasattr(value, "__fields__"):  # pydantic v1
        return value.dict()
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class RequestLog:
    """sys.stdout / sys.stderr: a request's lines go to its log, the rest
    to the real stream (which the server logs as the worker's)."""

    def __init__(self, channel, stream, level):
        self.channel, self.stream, self.level = channel, stream, level
        self.partial = {}
        self.lock = threading.Lock()

    def write(self, text):
        rid = REQUEST.get()
        if rid is None:
            return self.stream.write(text)
        with self.lock:
            buffered = self.partial.pop(rid, "") + text
            *lines, rest = buffered.split("\n")
            if rest:
                self.partial[rid] = rest
        for line in lines:
            self.channel.send({"id": rid, "log": line, "level": self.level})
        return len(text)

    def flush_request(self, rid):
        with self.lock:
            rest = self.partial.pop(rid, "")
        if rest:
            self.channel.send({"id": rid, "log": rest, "level": self.level})

    def flush(self):
        self.stream.flush()

    def isatty(self):
        return False

    def fileno(self):
        return self.stream.fileno()


class RequestLogHandler(logging.Handler):
    """`logging` records of a request into its log."""

    def __init__(self, channel):
        super().__init__()
        self.channel = channel
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def emit(self, record):
        rid = REQUEST.get()
        line = self.format(record)
        if rid is None:
            sys.__stderr__.write(line + "\n")
        else:
            self.channel.send({"id": rid, "log": line, "level": record.levelname.lower()})


class HttpError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status, self.message = status, message


def error_of(exc):
    """Truss's rule: HTTPException keeps its status and detail; a Truss input
    error is a 400; anything else is a 500 whose detail stays in the log."""
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and type(exc).__name__ == "HTTPException":
        detail = getattr(exc, "detail", None)
        return {"status": status, "message": detail if isinstance(detail, str) else json.dumps(detail)}
    if type(exc).__name__ in ("InputParsingError", "UserCodeError") and hasattr(exc, "args"):
        return {"status": 400, "message": str(exc)}
    if isinstance(exc, HttpError):
        return {"status": exc.status, "message": exc.message}
    return {"status": 500, "message": f"{type(exc).__name__}: {exc}"}


class Headers(dict):
    """Header names looked up without regard to case, as starlette's."""

    def __getitem__(self, name):
        return super().__getitem__(name.lower())

    def get(self, name, default=None):
        return super().get(name.lower(), default)

    def __contains__(self, name):
        return super().__contains__(name.lower()) if isinstance(name, str) else False


class Request:
    """What Truss hands `predict(self, model_input, request)`: the parts of
    starlette's Request that models read."""

    def __init__(self, worker, rid, meta):
        self.headers = Headers((k.lower(), v) for k, v in meta.get("headers") or [])
        self.query_params = dict(urllib.parse.parse_qsl(meta.get("query") or "", keep_blank_values=True))
        self._worker, self._rid = worker, rid

    async def is_disconnected(self):
        return self._rid in self._worker.disconnected


def is_response(value):
    """A starlette `Response` (or `StreamingResponse`), by its shape."""
    return hasattr(value, "status_code") and hasattr(value, "raw_headers") and (
        hasattr(value, "body") or hasattr(value, "body_iterator")
    )


def response_headers(response):
    return [[k.decode("latin-1"), v.decode("latin-1")] for k, v in response.raw_headers]


class LazyDataResolver:
    """Truss's `lazy_data_resolver`: strut reads `data/` as it is, so there is
    nothing to fetch; `block_until_download_complete` returns at once."""

    def __init__(self, data_dir):
        self.data_dir = data_dir

    def block_until_download_complete(self, *args, **kwargs):
        return self.data_dir


class Worker:
    def __init__(self, channel, init):
        self.channel, self.config, self.model_dir = channel, init["config"], init["model_dir"]
        self.secrets, self.environment = init.get("secrets") or {}, init.get("environment")
        concurrency = int((self.config.get("runtime") or {}).get("predict_concurrency") or 1)
        self.pool = ThreadPoolExecutor(max_workers=max(concurrency, 1) + 2, thread_name_prefix="predict")
        self.model = None
        self.captures = []
        self.takes_request = set()
        self.tasks = {}
        self.credits = {}
        # Requests whose client went away, while their work still runs.
        self.disconnected = set()

    def setup_path(self):
        root = pathlib.Path(self.model_dir)
        dirs = [root / (self.config.get("bundled_packages_dir") or "packages")]
        dirs += [root / d for d in self.config.get("external_package_dirs") or []]
        for d in dirs:
            if d.is_dir():
                sys.path.append(str(d))
        # The model directory itself, so `model/` imports as a package.
        sys.path.insert(0, str(root))

    def check_python_version(self):
        """config.yaml's `python_version` (Truss's `py311`) must be this
        interpreter's, or the model runs where it was not meant to."""
        asked = str(self.config.get("python_version") or "")
        if not asked.startswith("py3") or not asked[3:].isdigit():
            return
        minor = int(asked[3:])
        if sys.version_info[:2] != (3, minor):
            have = f"{sys.version_info[0]}.{sys.version_info[1]}"
            raise RuntimeError(
                f"config.yaml asks for python_version {asked} (Python 3.{minor}), but "
                f"{sys.executable} is Python {have}; pass --python with a Python 3.{minor} "
                f"interpreter that has the model's requirements"
            )

    def build(self):
        self.check_python_version()
        self.setup_path()
        module_dir = self.config.get("model_module_dir") or "model"
        filename = self.config.get("model_class_filename") or "model.py"
        module = importlib.import_module(f"{module_dir.replace('/', '.')}.{filename[:-3]}")
        class_name = self.config.get("model_class_name") or "Model"
        cls = getattr(module, class_name, None)
        if cls is None:
            raise RuntimeError(f"{module_dir}/{filename} defines no class `{class_name}`")
        data_dir = pathlib.Path(self.model_dir) / (self.config.get("data_dir") or "data")
        offered = {
            "config": self.config,
            "data_dir": data_dir,
            "secrets": self.secrets,
            "environment": self.environment,
            "lazy_data_resolver": LazyDataResolver(data_dir),
        }
        params = inspect.signature(cls).parameters
        takes_all = any(p.kind == p.VAR_KEYWORD for p in params.values())
        kwargs = {k: v for k, v in offered.items() if takes_all or k in params}
        self.model = cls(**kwargs)
        predict = getattr(self.model, "predict", None)
        if predict is None:
            raise RuntimeError(f"`{class_name}` has no `predict` method")
        # `predict(self, model_input, request)` (and the OpenAI-style
        # methods alike): Truss passes the request.
        self.takes_request = {
            name
            for name in ("predict",) + OPENAI_METHODS
            if hasattr(self.model, name) and len(inspect.signature(getattr(self.model, name)).parameters) > 1
        }

    async def load(self):
        self.build()
        load = getattr(self.model, "load", None)
        if load is not None:
            await self.call(load)
        methods = [m for m in ("preprocess", "postprocess", "is_healthy") + OPENAI_METHODS if hasattr(self.model, m)]
        if self.takes_request:
            methods.append("wants_request")
        return methods

    async def call(self, fn, *args):
        """A sync function on the pool (with the request's context), an
        async one on the loop; either way the result, awaited."""
        if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
            result = fn(*args)
        else:
            ctx = contextvars.copy_context()
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(self.pool, functools.partial(ctx.run, fn, *args))
        if inspect.isawaitable(result):
            result = await result
        return result

    def handle(self, message):
        op, rid = message.get("op"), message.get("id")
        if op == "cancel":
            task = self.tasks.get(rid)
            if task is not None:
                self.disconnected.add(rid)
                task.cancel()
            return
        if op == "ack":
            credit = self.credits.get(rid)
            if credit is not None:
                for _ in range(message.get("n", 1)):
                    credit.release()
            return
        if op not in SERVED:
            self.channel.send({"id": rid, "err": {"status": 404, "message": f"`{op}` is not served"}})
            return
        args = [message.get("input")]
        if op in self.takes_request:
            args.append(Request(self, rid, message.get("request") or {}))
        task = asyncio.ensure_future(self.run(op, rid, args))
        # Health checks are not requests: output written meanwhile is not theirs.
        if op != "health":
            self.tasks[rid] = task
            task.add_done_callback(lambda _: self.forget(rid))

    def forget(self, rid):
        self.tasks.pop(rid, None)
        self.disconnected.discard(rid)

    async def run(self, op, rid, args):
        # The task's own copy of the context: its lines are this request's.
        if op != "health":
            REQUEST.set(rid)
        try:
            if op == "health":
                healthy = await self.call(self.model.is_healthy) if hasattr(self.model, "is_healthy") else True
                self.channel.send({"id": rid, "ok": bool(healthy)})
                return
            fn = getattr(self.model, op)
            result = await self.call(fn, *args) if not inspect.isasyncgenfunction(fn) else fn(*args)
            if op in ("predict",) + OPENAI_METHODS and (inspect.isgenerator(result) or inspect.isasyncgen(result)):
                await self.stream(rid, result)
            elif op in ("predict",) + OPENAI_METHODS and is_response(result):
                head = {"status": result.status_code, "headers": response_headers(result)}
                if hasattr(result, "body_iterator"):
                    await self.stream(rid, result.body_iterator, head)
                else:
                    body = base64.b64encode(bytes(result.body)).decode()
                    self.channel.send({"id": rid, "response": {**head, "body_b64": body}})
            else:
                self.settle()
                self.channel.send({"id": rid, "ok": result})
        except asyncio.CancelledError:
            self.channel.send({"id": rid, "err": {"status": 499, "message": "cancelled"}})
        except Exception as exc:  # noqa: BLE001 - the model's failure is the request's
            self.log_exception(rid, exc)
            self.settle()
            self.channel.send({"id": rid, "err": error_of(exc)})
        finally:
            for stream in (sys.stdout, sys.stderr):
                if isinstance(stream, RequestLog):
                    stream.flush_request(rid)

    async def stream(self, rid, gen, head=None):
        credit = asyncio.Semaphore(STREAM_WINDOW)
        self.credits[rid] = credit
        self.channel.send({"id": rid, "stream": True, **({"response": head} if head else {})})
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        done = object()
        try:
            while True:
                await credit.acquire()
                if inspect.isasyncgen(gen):
                    try:
                        chunk = await gen.__anext__()
                    except StopAsyncIteration:
                        break
                else:
                    chunk = await loop.run_in_executor(self.pool, ctx.run, next, gen, done)
                    if chunk is done:
                        break
                if isinstance(chunk, (bytes, bytearray)):
                    self.channel.send({"id": rid, "chunk_b64": base64.b64encode(chunk).decode()})
                elif isinstance(chunk, str):
                    self.channel.send({"id": rid, "chunk": chunk})
                else:
                    self.channel.send({"id": rid, "chunk": json.dumps(chunk, default=to_json)})
            self.settle()
            self.channel.send({"id": rid, "end": True})
        finally:
            self.credits.pop(rid, None)
            closer = getattr(gen, "aclose", None) or getattr(gen, "close", None)
            try:
                result = closer() if closer else None
                if inspect.isawaitable(result):
                    await result
            except Exception:  # noqa: BLE001 - closing a stopped stream
                pass

    def settle(self):
        """The request's own output read from the descriptors first."""
        for capture in self.captures:
            capture.drain()

    def log_exception(self, rid, exc):
        for line in traceback.format_exception(type(exc), exc, exc.__traceback__):
            for part in line.rstrip("\n").split("\n"):
                self.channel.send({"id": rid, "log": part, "level": "error"})


class FdCapture:
    """Output written to a file descriptor itself (code that replaced
    sys.stdout with its own stream, C extensions) is read from a pipe: while
    exactly one request runs it is that request's, else the worker's.
    `stream` writes to the original descriptor, for the worker's own lines."""

    def __init__(self, fd, level, channel, running):
        self.level, self.channel, self.running = level, channel, running
        self.original = os.dup(fd)
        self.read, write = os.pipe()
        os.dup2(write, fd)
        os.close(write)
        self.stream = open(self.original, "w", buffering=1, closefd=False)
        self.busy = False
        self.idle = threading.Condition()
        threading.Thread(target=self.pump, name=f"capture-{fd}", daemon=True).start()

    def pump(self):
        rest = b""
        while True:
            # Marked busy before the bytes leave the pipe, so `drain` never
            # sees an empty pipe while lines are still on their way.
            select.select([self.read], [], [])
            with self.idle:
                self.busy = True
            data = os.read(self.read, 65536)
            if not data:
                return
            *lines, rest = (rest + data).split(b"\n")
            for line in lines:
                requests = list(self.running)
                if len(requests) == 1:
                    text = line.decode("utf-8", errors="replace")
                    self.channel.send({"id": requests[0], "log": text, "level": self.level})
                else:
                    os.write(self.original, line + b"\n")
            with self.idle:
                self.busy = False
                self.idle.notify_all()

    def drain(self, limit=1.0):
        """Waits until what was written so far has been read, so a request's
        last lines are its own before it is answered. Only output still in
        the pipe makes it wait; `limit` bounds that under heavy load."""
        deadline = time.monotonic() + limit
        with self.idle:
            while self.busy or select.select([self.read], [], [], 0)[0]:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self.idle.wait(min(left, 0.005))


async def read_frame(reader):
    head = await reader.readexactly(4)
    (length,) = struct.unpack(">I", head)
    return json.loads(await reader.readexactly(length))


async def main():
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_unix_connection(os.environ["STRUT_WORKER_SOCKET"])
    channel = Channel(loop, writer)
    running = {}
    captures = [FdCapture(fd, level, channel, running) for fd, level in ((1, "info"), (2, "warn"))]
    sys.stdout = RequestLog(channel, captures[0].stream, "info")
    sys.stderr = RequestLog(channel, captures[1].stream, "warn")
    logging.basicConfig(level=logging.INFO, handlers=[RequestLogHandler(channel)], force=True)
    worker = Worker(channel, await read_frame(reader))
    worker.tasks, worker.captures = running, captures
    try:
        methods = await worker.load()
    except Exception as exc:  # noqa: BLE001 - reported to the server, which retries
        traceback.print_exc(file=sys.__stderr__)
        channel.send({"op": "load_failed", "error": f"{type(exc).__name__}: {exc}"})
        await asyncio.sleep(0)  # the queued frame is written
        await writer.drain()
        return
    channel.send({"op": "loaded", "methods": methods})
    while True:
        try:
            message = await read_frame(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            return  # the server went away: so does the worker
        worker.handle(message)


if __name__ == "__main__":
    asyncio.run(main())
