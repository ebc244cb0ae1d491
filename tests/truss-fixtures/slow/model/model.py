import asyncio


class Model:
    def __init__(self, **kwargs):
        self._cancelled = 0

    async def predict(self, model_input):
        if model_input.get("cancelled"):
            return {"cancelled": self._cancelled}
        try:
            await asyncio.sleep(model_input["sleep"])
        except asyncio.CancelledError:
            self._cancelled += 1
            raise
        return {"slept": model_input["sleep"]}
