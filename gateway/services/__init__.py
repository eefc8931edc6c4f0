"""Request logic shared by routers and sessions, testable without a server."""
