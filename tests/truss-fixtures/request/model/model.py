class Model:
    async def predict(self, model_input, request):
        return {
            "input": model_input,
            "user_agent": request.headers.get("User-Agent"),
            "tenant": request.headers["x-tenant"],
            "query": request.query_params,
            "disconnected": await request.is_disconnected(),
        }
