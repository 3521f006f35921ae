"""The gateway: an aiohttp service that turns HTTP and Server-Sent Events into jobstore gRPC calls for
the browser and the web app's server. It never touches the database."""
