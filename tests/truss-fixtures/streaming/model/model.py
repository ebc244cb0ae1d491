import asyncio


class Model:
    def predict(self, model_input):
        n = model_input.get("n", 3)
        if model_input.get("async"):
            return self._async_chunks(n)
        return (f"part{i};" for i in range(n))

    async def _async_chunks(self, n):
        for i in range(n):
            await asyncio.sleep(0.001)
            yield f"async{i};"
