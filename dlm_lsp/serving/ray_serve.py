"""The FIM API on Ray Serve: replicas on several GPUs or nodes, Ray's dynamic batching.

    python -m dlm_lsp.serving.ray_serve --model DIR --num-replicas 2 --num-gpus 1 [--port 8000]

Scaling past one machine is Ray's job, not ours: each replica is a Serve deployment holding
one model, serving the very app of ``serve-http`` (``fim_api.make_app``), and concurrent
requests on a replica go through serve-http's own bounded queue (``jobs.py``), which gathers
them into one denoising run (``model/batching.py``) and answers overload with 429 as
serve-http does. Ray's HTTP proxy routes requests across replicas. Needs the
``ray`` extra (``pip install "ray[serve]"``); see the README for a cluster example.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable
from typing import Any

from dlm_lsp.config import apply_settings
from dlm_lsp.serving.fim_api import Completion, FimParams, Limits, make_app
from dlm_lsp.serving.serve_http import LocalFimService, api_key


class RayFimService:
    """One replica's service: serve-http's own queue and batching (``jobs.py``), so that a
    replica sheds load as the local server does: 429 at once when its queue is full or the
    wait would exceed ``queue_timeout_s``, and when a queued request's time runs out."""

    def __init__(self, settings: dict[str, Any], model_name: str, max_batch: int,
                 wait_s: float, max_waiting: int = 64, queue_timeout_s: float = 10.0,
                 limits: Limits | None = None):
        parsed, _ = apply_settings(settings)
        self.local = LocalFimService(parsed, model_name, max_batch, wait_s * 1e3, limits,
                                     max_waiting, queue_timeout_s)
        self.model_name = model_name

    async def complete(self, params: FimParams, disconnected: asyncio.Event) -> Completion:
        """Queued and batched on this replica's event loop; a failed row fails alone."""
        return await self.local.complete(params, disconnected)

    def state(self) -> dict[str, Any]:
        return self.local.state()


def app_builder(settings: dict[str, Any], model_name: str, api_key: str | None,
                limits: Limits, max_batch: int, wait_s: float, max_waiting: int = 64,
                queue_timeout_s: float = 10.0) -> Callable[[], Any]:
    """A function building the ASGI app on each replica (Ray calls it there)."""
    def build() -> Any:
        service = RayFimService(settings, model_name, max_batch, wait_s, max_waiting,
                                queue_timeout_s, limits)
        service.local.engine.load()  # the replica is ready when its model is
        return make_app(service, api_key, limits)
    return build


def application(settings: dict[str, Any] | None = None, model_name: str = "dlm-embedded",
                api_key: str | None = None, limits: Limits | None = None,
                num_replicas: int = 1, num_gpus: float = 0, max_batch: int = 16,
                wait_s: float = 0.005, max_waiting: int = 64,
                queue_timeout_s: float = 10.0) -> Any:
    """The Serve application (``serve.run`` it, or name it in a Serve config file). Ray
    passes a replica as many requests as its own queue may hold and the batch being decoded
    (the replica answers 429 past that); requests beyond that are held by Ray's proxy up to
    `max_waiting` more, then answered 503 at once."""
    from ray import serve

    class DlmFim:
        """A replica: its routes come from the ingress app."""

    builder = app_builder(settings or {}, model_name, api_key, limits or Limits(),
                          max_batch, wait_s, max_waiting, queue_timeout_s)
    deployment = serve.deployment(serve.ingress(builder)(DlmFim), name="dlm-fim",
                                  num_replicas=num_replicas,
                                  max_ongoing_requests=max_waiting + max_batch + 8,
                                  max_queued_requests=max_waiting,
                                  ray_actor_options={"num_gpus": num_gpus})
    return deployment.bind()


def main(argv: list[str] | None = None) -> None:
    import ray
    from ray import serve

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--address", default=None, help="Ray cluster address (default: local)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--model-name", default="dlm-embedded")
    ap.add_argument("--settings", default=None, help="JSON object of dlm settings")
    ap.add_argument("--api-key-env", default="DLM_API_KEY")
    ap.add_argument("--num-replicas", type=int, default=1)
    ap.add_argument("--num-gpus", type=float, default=0, help="GPUs per replica")
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--max-waiting", type=int, default=64,
                    help="requests that may wait on a replica; beyond, 429 at once")
    ap.add_argument("--queue-timeout-s", type=float, default=10.0,
                    help="longest wait for a replica's decoder (429 with Retry-After beyond)")
    args = ap.parse_args(argv)
    key = api_key(args.host, args.api_key_env)
    settings = {**json.loads(args.settings or "{}"), "model": args.model}
    ray.init(address=args.address)
    serve.start(http_options={"host": args.host, "port": args.port})
    serve.run(application(settings, args.model_name, key, Limits(), args.num_replicas,
                          args.num_gpus, args.max_batch, max_waiting=args.max_waiting,
                          queue_timeout_s=args.queue_timeout_s),
              route_prefix="/", blocking=True)


if __name__ == "__main__":
    main()
