"""Drover's trust boundary (docs/security.md): who may call (credentials, HTTP Basic), what they may do
(Mesos-format ACLs), TLS. The pure parts (credentials.py, acls.py) hold no IO; http.py is the aiohttp edge."""
