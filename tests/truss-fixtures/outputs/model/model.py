# Real numpy and pydantic where the environment has them (Truss's server
# does); stand-ins of the same shape where it does not (strut's worker needs
# neither), so the fixture runs under both.
try:
    import numpy

    def vector(values):
        return numpy.array(values, dtype=numpy.float32)

except ImportError:

    class vector:
        def __init__(self, values):
            self._values = values

        def tolist(self):
            return list(self._values)


try:
    from pydantic import BaseModel

    class Reply(BaseModel):
        label: str
        score: float

except ImportError:

    class Reply:
        def __init__(self, label, score):
            self.label, self.score = label, score

        def model_dump(self, mode="python"):
            return {"label": self.label, "score": self.score}


class Model:
    def predict(self, model_input):
        kind = model_input.get("kind")
        if kind == "numpy":
            return {"vector": vector([0.5, 1.5])}
        if kind == "pydantic":
            return Reply(label="positive", score=0.5)
        return {"pair": (1, 2)}
