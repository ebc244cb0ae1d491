try:
    from starlette.responses import Response, StreamingResponse
except ImportError:  # strut's worker needs no starlette: the same shape serves

    class Response:
        def __init__(self, content=b"", status_code=200, headers=None, media_type=None):
            self.status_code = status_code
            self.body = content.encode() if isinstance(content, str) else content
            self.raw_headers = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
            if media_type:
                self.raw_headers.append((b"content-type", media_type.encode()))

    class StreamingResponse(Response):
        def __init__(self, content, status_code=200, headers=None, media_type=None):
            super().__init__(b"", status_code, headers, media_type)
            del self.body
            self.body_iterator = content


class Model:
    def predict(self, model_input):
        kind = model_input.get("kind")
        if kind == "stream":
            return StreamingResponse(
                (f"row{i}\n" for i in range(3)), headers={"x-rows": "3"}, media_type="text/csv"
            )
        if kind == "gone":
            return Response("no longer here", status_code=410, media_type="text/plain")
        return Response('{"plain": true}', status_code=201, headers={"x-model": "response"},
                        media_type="application/json")
