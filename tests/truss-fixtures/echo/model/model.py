class Model:
    def __init__(self, **kwargs):
        self._config = kwargs["config"]

    def load(self):
        pass

    def predict(self, model_input):
        return model_input
