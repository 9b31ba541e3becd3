"""HTTP routes, one module per resource; each is thin: validate, call the service layer, answer."""
