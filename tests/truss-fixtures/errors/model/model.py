try:
    from fastapi import HTTPException
except ImportError:  # strut's worker needs no fastapi: the same shape serves

    class HTTPException(Exception):
        def __init__(self, status_code, detail):
            super().__init__(detail)
            self.status_code = status_code
            self.detail = detail


class Model:
    def predict(self, model_input):
        if model_input.get("fail") == "teapot":
            raise HTTPException(status_code=418, detail="I'm a teapot")
        if model_input.get("fail") == "value":
            raise ValueError("internal detail: the database password is hunter2")
        return {"ok": True}
