"""A bad APP: this module is not valid Python."""

def app(environ, start_response)
    return []
