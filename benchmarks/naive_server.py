"""The baseline a user would write instead of modelgate: FastAPI + onnxruntime, one process.

Same REST body and answer as the gateway's `POST /v1/models/{model}/predict` (top-1 label and
the `top_k` best), one ONNX Runtime call per request (1 intra-op thread, no batching, no
metrics, no limits, no queue). Payloads go through the project's own preprocessing functions
(`service.preprocess`), so both servers do the same image/text/sequence arithmetic and the
comparison measures only what the serving around it costs.

    PYTHONPATH=. python benchmarks/naive_server.py --repository model_repository --port 9000
"""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service import preprocess
from service.repository import load_repository


class Body(BaseModel):
    inputs: Any
    top_k: int = 5


def build_app(repository: Path) -> FastAPI:
    app = FastAPI()
    models = {}
    for spec in load_repository(repository).values():
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(str(spec.onnx_path), options)
        models[spec.name] = (spec, preprocess.for_model(spec, max_image_pixels=16_000_000), session)

    @app.get("/readyz")
    def readyz() -> dict[str, bool]:
        return {"ready": True}

    @app.post("/v1/models/{name}/predict")
    async def predict(name: str, body: Body) -> dict[str, Any]:
        if name not in models:
            raise HTTPException(404, f"unknown model {name}")
        spec, pre, session = models[name]
        predictions = []
        for payload in pre.from_json(body.inputs):
            tensors = pre.preprocess(pre.decode(payload))
            (logits,) = session.run([spec.output], {k: v[None] for k, v in tensors.items()})
            probs = np.exp(logits[0] - logits[0].max())
            probs /= probs.sum()
            best = [
                {"label": spec.labels[i], "probability": float(probs[i])}
                for i in np.argsort(-probs)[: body.top_k]
            ]
            predictions.append({**best[0], "top_k": best})
        return {
            "model": name,
            "version": spec.version,
            "request_id": uuid.uuid4().hex,
            "predictions": predictions,
        }

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    uvicorn.run(build_app(args.repository), port=args.port, log_level="warning", access_log=False)
