import io
import os
import sys


class Model:
    def load(self):
        # As some libraries do: a stream of its own on the process's stdout.
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)

    def predict(self, model_input):
        print("printed through a replaced sys.stdout")
        os.write(2, b"written straight to file descriptor 2\n")
        return {"ok": True}
