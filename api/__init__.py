"""The network faces of a node: the Litestar REST/SSE app and the grpclib service handlers."""

from ._grpc import KvService, grpc_handlers
from ._http import create_app
from ._problems import HTTP_STATUS
from ._server import NodeServer, serve

__all__ = ["HTTP_STATUS", "KvService", "NodeServer", "create_app", "grpc_handlers", "serve"]
