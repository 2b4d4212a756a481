"""Stage 5, serve: `ragapp serve`. service holds the state the page and the API share (collections
per user, indexing jobs, chats); api is the HTTP API, ui the Gradio page, auth the users; the
request guards (same_origin, throttle, upload_guard) and uploads enforce the limits; http_status
turns errors into HTTP answers. May import every stage below it, never cli."""
