import asyncio
import logging

log = logging.getLogger("lifecycle")


class Model:
    # Only `config` and `secrets`: Truss passes just the arguments named.
    def __init__(self, config, secrets):
        self._greeting = config["model_metadata"]["greeting"]
        self._has_token = "api_token" in secrets
        self._loads = 0

    def load(self):
        self._loads += 1

    def is_healthy(self):
        return self._loads == 1

    def preprocess(self, model_input):
        return {**model_input, "preprocessed": True}

    async def predict(self, model_input):
        await asyncio.sleep(0)
        print(f"predicting for {model_input['name']}")
        log.warning("a warning from the model")
        return {
            "message": f"{self._greeting}, {model_input['name']}",
            "preprocessed": model_input["preprocessed"],
            "has_token": self._has_token,
            "loads": self._loads,
        }

    async def postprocess(self, model_output):
        await asyncio.sleep(0)
        return {"output": model_output, "postprocessed": True}
