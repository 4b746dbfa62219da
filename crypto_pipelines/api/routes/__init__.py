"""The API's routers, one module per concern; ``crypto_pipelines.api.factory`` includes them."""
