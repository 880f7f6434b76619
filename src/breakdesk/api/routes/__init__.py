"""HTTP routes, one module per resource family; each route declares its permission with `require()`."""
