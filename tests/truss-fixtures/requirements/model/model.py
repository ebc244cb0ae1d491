import sys

import six  # from `requirements`, installed by strut serve --install-requirements


class Model:
    def predict(self, model_input):
        return {"six": six.__version__, "prefix": sys.prefix}
