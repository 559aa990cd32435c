"""The analyst's web console (`sandtrap web`): ASGI routes, templates, vendored static assets."""
