"""The HTTP edge: the app factory, routes, request reading, authentication, errors and the gunicorn server."""
