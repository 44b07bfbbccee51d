"""Two ways to reach the fake: an in-process HTTP client and a loopback server."""

import asyncio
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import stripe
from requests.structures import CaseInsensitiveDict

from .fake import ConnectionDropped


class FakeHTTPClient(stripe.HTTPClient):
    """A ``stripe.HTTPClient`` that hands each request to a FakeStripe in process.

    stripe-python's own retry loop runs on top of it. The backoff sleeps that
    loop requests are recorded in ``fake.retry_sleeps`` and skipped unless
    ``sleep=True``, so tests of retries stay fast.
    """

    name = "fakestripe"

    def __init__(self, fake, *, sleep=False):
        super().__init__()
        self.fake = fake
        self.sleep = sleep

    def _sleep_time_seconds(self, num_retries):
        seconds = super()._sleep_time_seconds(num_retries)
        self.fake.retry_sleeps.append(seconds)
        return seconds if self.sleep else 0

    def request(self, method, url, headers, post_data=None, *, _usage=None):
        try:
            status, response_headers, body = self.fake.handle(
                method, url, dict(headers or {}), post_data
            )
        except ConnectionDropped as exc:
            raise stripe.APIConnectionError(
                "Unexpected error communicating with Stripe (fake connection "
                f"dropped on {exc}).",
                should_retry=True,
            ) from None
        return body.decode(), status, CaseInsensitiveDict(response_headers)

    def request_stream(self, method, url, headers, post_data=None, *, _usage=None):
        body, status, response_headers = self.request(method, url, headers, post_data)
        return iter([body.encode()]), status, response_headers

    async def request_async(self, method, url, headers, post_data=None):
        return self.request(method, url, headers, post_data)

    async def request_stream_async(self, method, url, headers, post_data=None):
        body, status, response_headers = self.request(method, url, headers, post_data)

        async def chunks():
            yield body.encode()

        return chunks(), status, response_headers

    def sleep_async(self, secs):
        return asyncio.sleep(secs if self.sleep else 0)

    def close(self):
        pass

    async def close_async(self):
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _serve(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        fake = self.server.fake
        url = f"http://{self.headers.get('Host', '127.0.0.1')}{self.path}"
        try:
            status, headers, payload = fake.handle(
                self.command, url, dict(self.headers.items()), body
            )
        except ConnectionDropped:
            self.close_connection = True
            self.connection.close()
            return
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_DELETE = _serve

    def log_message(self, format, *args):
        pass


class FakeStripeServer:
    """Serve a FakeStripe on 127.0.0.1 on a free port, for real-socket tests.

    One address serves both the api.stripe.com and the
    meter-events.stripe.com paths.
    """

    def __init__(self, fake, port=0):
        self.fake = fake
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.fake = fake
        self._thread = None

    @property
    def url(self):
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self):
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-stripe",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self):
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()
