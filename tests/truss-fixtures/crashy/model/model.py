import ctypes
import os


class Model:
    def predict(self, model_input):
        crash = model_input.get("crash")
        if crash == "segfault":
            ctypes.string_at(0)
        if crash == "exit":
            os._exit(3)
        return {"pid": os.getpid()}
