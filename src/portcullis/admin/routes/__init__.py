"""The admin API's routers, one module per resource; ``admin.app`` includes them all."""
