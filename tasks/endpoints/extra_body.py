"""An endpoint client that sends the endpoint's `extra_body` (job spec) in every request.

Fields such as llama.cpp's `grammar` or `response_format` with a JSON schema constrain what a
model may write: a judge endpoint constrained to "Score: N" always gives a parseable score. The
fields were validated by the spec (no field foldem sets itself, plain JSON, bounded size).
"""

from __future__ import annotations

import copy
from typing import Any

from typing_extensions import override

from tasks.endpoints.base import ChatRequest
from tasks.endpoints.client import EndpointClient


class ExtraBodyClient(EndpointClient):
    """`EndpointClient` whose requests carry `endpoint.extra_body` (the OpenAI SDK merges
    `extra_body` into the JSON body it sends)."""

    @override  # mypy fails here if the client stops building bodies in `_body`
    def _body(self, request: ChatRequest) -> dict[str, Any]:
        body = super()._body(request)
        if self.endpoint.extra_body:
            body["extra_body"] = copy.deepcopy(self.endpoint.extra_body)
        return body


def client_class(extra_body: dict[str, Any]) -> type[EndpointClient]:
    """The client class for an endpoint: the plain one unless it has extra body fields."""
    return ExtraBodyClient if extra_body else EndpointClient
