"""HTTP routers: thin — validate, authenticate (dependencies), call a service."""
