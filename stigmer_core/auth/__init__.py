"""Authentication and authorization: API tokens, roles per org, the caller a request runs as.

``roles`` holds the vocabulary (access levels, roles), ``access`` the ``Caller``, ``tokens``
the token format and the ``Authenticator``, ``pages`` the page tokens bound
to their query, ``transport`` the server's TLS and refuse-to-be-open rules,
``identity`` the ``whoami`` service. docs/security.md tells the whole model.
"""
