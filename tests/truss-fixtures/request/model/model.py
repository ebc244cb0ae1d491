try:
    from starlette.requests import Request
except ImportError:  # strut's worker passes its own request object: no starlette needed
    Request = object

class Model:
    async def predict(self, model_input, request: Request):
        return {
            "input": model_input,
            "user_agent": request.headers.get("User-Agent"),
            "tenant": request.headers["x-tenant"],
            "query": dict(request.query_params),
            "disconnected": await request.is_disconnected(),
        }
