class Vector:
    """Answers `tolist()` as a numpy array does (numpy itself not needed)."""

    def __init__(self, values):
        self._values = values

    def tolist(self):
        return list(self._values)


class Reply:
    """Answers `model_dump()` as a pydantic v2 model does."""

    def __init__(self, label, score):
        self.label, self.score = label, score

    def model_dump(self, mode="python"):
        return {"label": self.label, "score": self.score}


class Model:
    def predict(self, model_input):
        return {
            "vector": Vector([0.5, 1.5]),
            "reply": Reply("positive", 0.9),
            "pair": (1, 2),
        }
