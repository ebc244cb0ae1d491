import json

try:
    from starlette.requests import Request
except ImportError:  # strut's worker passes its own request object: no starlette needed
    Request = object


class Model:
    """An engine that speaks OpenAI's API itself, as Truss models wrapping
    vLLM or SGLang do: the server passes the request body through."""

    def predict(self, model_input):
        return {"predict": model_input}

    async def chat_completions(self, model_input, request: Request):
        words = model_input["messages"][-1]["content"].split()
        if not model_input.get("stream"):
            return {
                "object": "chat.completion",
                "model": model_input.get("model", "engine"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": " ".join(reversed(words))}}],
                "tenant": request.headers.get("x-tenant"),
            }
        return self._chunks(words)

    async def _chunks(self, words):
        for word in reversed(words):
            chunk = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": word}}]}
            yield f"data: {json.dumps(chunk)}\n\n"
        yield "data: [DONE]\n\n"

    def embeddings(self, model_input):
        texts = model_input["input"]
        texts = [texts] if isinstance(texts, str) else texts
        return {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": [float(len(t)), 1.0]} for i, t in enumerate(texts)],
        }
