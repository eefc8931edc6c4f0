"""One resilient HTTP client per vLLM-Omni backend (the Omni server, the TTS server).

What it adds over a bare `httpx.AsyncClient`:

- one pooled client per backend with separate connect / read / total timeouts;
- retries with exponential backoff only where they are safe: the connection failed, or the server answered
  502/503/504 before we read any of its body (nothing has been generated for us yet);
- a circuit breaker, so a dead server fails fast with 503 instead of tying up every request for a timeout;
- a background health poller (`GET /health`, `GET /v1/models`, fact sheet §6) that knows vLLM-Omni's
  load-time behaviour: the socket is bound but not listening while the stages load, so connections are
  *refused* for minutes; that is reported as "loading", not as an error;
- every failure a `BackendError` (engines/errors.py) naming the backend, with a domain code the gateway's
  edges map to a status: `backend_unavailable` / `backend_loading` / `backend_circuit_open`,
  `backend_timeout`, `backend_bad_response`, `backend_rejected` (the server refused our request with a 4xx:
  its status, error type and message are passed on);
- `GET /version` on every (re)connect: a server that does not speak the 0.30.x wire format is logged as a
  WARNING, and the version shows in the component's detail (/models).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.engines.base import ModelState
from gateway.engines.errors import BackendError
from gateway.engines.vllm_omni.protocol import WIRE_VERSION_TEXT, wire_version_matches

log = logging.getLogger(__name__)

_RETRY_STATUSES = frozenset({502, 503, 504})


def unavailable(backend: str, message: str, code: str = "backend_unavailable") -> BackendError:
    return BackendError(code, backend, message)


def timed_out(backend: str, message: str) -> BackendError:
    return BackendError("backend_timeout", backend, message)


def bad_answer(backend: str, message: str) -> BackendError:
    return BackendError("backend_bad_response", backend, message)


@dataclass(frozen=True)
class BackendConfig:
    name: str  # "omni" | "tts": the label in errors, /health and metrics
    url: str
    connect_timeout: float = 3.0
    read_timeout: float = 30.0  # longest silence between two bytes of a response
    total_timeout: float = 120.0  # whole request, streaming included
    retries: int = 2
    backoff: float = 0.2
    breaker_threshold: int = 5  # consecutive failures that open the breaker
    breaker_reset: float = 10.0  # seconds open before one probe request is let through
    poll_interval: float = 5.0
    load_grace: float = 900.0  # refused connections count as "loading" for this long
    model: str = ""  # the served model id requests must name; "" = discover it
    model_hint: str = ""  # substring that picks our model when a server lists several
    max_connections: int = 64
    api_key: str = field(default="", repr=False)  # vLLM `--api-key`: `Authorization: Bearer <key>`


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Consecutive-failure breaker: open after `threshold` failures, one probe after `reset` seconds."""

    def __init__(self, threshold: int, reset: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = max(1, threshold)
        self.reset = reset
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probe_in_flight = False
        self.opened_total = 0

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at >= self.reset:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def retry_after(self) -> float:
        if self._opened_at is None:
            return 0.0
        return max(0.0, self.reset - (self._clock() - self._opened_at))

    def allow(self) -> bool:
        """May a request go out now? In half-open state only one probe at a time."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._probe_in_flight:
            self._probe_in_flight = True
            return True
        return False

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probe_in_flight = False

    def failure(self) -> None:
        self._failures += 1
        was_probe = self._probe_in_flight
        self._probe_in_flight = False
        if was_probe or (self._opened_at is None and self._failures >= self.threshold):
            if self._opened_at is None:
                self.opened_total += 1
            self._opened_at = self._clock()

    def release(self) -> None:
        """A request that ended without telling anything about the backend (e.g. the caller left)."""
        self._probe_in_flight = False


@dataclass
class BackendStats:
    requests: dict[str, int] = field(default_factory=dict)  # outcome -> count
    failures: dict[str, int] = field(default_factory=dict)  # error code -> count
    retries: int = 0

    def count(self, outcome: str) -> None:
        self.requests[outcome] = self.requests.get(outcome, 0) + 1

    def fail(self, code: str) -> None:
        self.failures[code] = self.failures.get(code, 0) + 1


class BackendClient:
    """The pooled client, breaker and health poller of one backend."""

    def __init__(self, config: BackendConfig, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self.name = config.name
        timeout = httpx.Timeout(
            connect=config.connect_timeout,
            read=config.read_timeout,
            write=config.read_timeout,
            pool=config.connect_timeout,
        )
        limits = httpx.Limits(
            max_connections=config.max_connections,
            max_keepalive_connections=config.max_connections,
            keepalive_expiry=30.0,
        )
        self.http = httpx.AsyncClient(
            base_url=config.url,
            timeout=timeout,
            limits=limits,
            transport=transport,
            headers=self.auth_headers(),
        )
        self.breaker = CircuitBreaker(config.breaker_threshold, config.breaker_reset)
        self.stats = BackendStats()
        self._state = ModelState.LOADING
        self._detail: str | None = "not polled yet"
        self._model_id = config.model
        self._served: tuple[str, ...] = ()
        self._first_refused: float | None = None
        self._poll_failures = 0
        self._sequence = 0
        self._server_version: str | None = None
        self._poller: asyncio.Task[None] | None = None
        self._rediscovery: asyncio.Task[None] | None = None
        self._ready_callbacks: list[Callable[[], Any]] = []
        self._started = False

    # -- state -------------------------------------------------------------------------------
    @property
    def state(self) -> ModelState:
        return self._state

    @property
    def detail(self) -> str | None:
        """Why the backend is not ready; once ready, the server version it reported."""
        if self._detail is not None or self._state is not ModelState.READY:
            return self._detail
        return self.version_note()

    @property
    def server_version(self) -> str | None:
        """What the server's `GET /version` said at the last (re)connect; None when it said nothing."""
        return self._server_version

    def version_note(self) -> str | None:
        if self._server_version is None:
            return None
        if wire_version_matches(self._server_version):
            return f"server version {self._server_version}"
        return (
            f"server version {self._server_version}: not the {WIRE_VERSION_TEXT[:4]}.x wire format "
            "this gateway speaks"
        )

    @property
    def model_id(self) -> str:
        """The id requests must name (`model`): the configured name, else the one the server serves."""
        return self._model_id

    @property
    def served(self) -> tuple[str, ...]:
        """The model ids the server listed at its last successful /v1/models."""
        return self._served

    def on_ready(self, callback: Callable[[], Any]) -> None:
        """Run `callback` (sync or async) every time the backend becomes ready (e.g. register voices)."""
        self._ready_callbacks.append(callback)

    def _degrade(self, state: ModelState, detail: str) -> None:
        """A failed poll. One slow or failed poll of a ready server (a busy CPU, a GC pause) must not fail
        requests that would succeed: a ready backend leaves READY only on the second failure in a row."""
        self._poll_failures += 1
        if self._state is ModelState.READY and self._poll_failures < 2:
            log.info("health poll of %s failed once: %s", self.name, detail)
            return
        self._set_state(state, detail)

    def _set_state(self, state: ModelState, detail: str | None) -> None:
        if state is not self._state:
            log.info("backend %s: %s -> %s (%s)", self.name, self._state.value, state.value, detail or "")
        self._state = state
        self._detail = detail

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        await self.poll_once()
        self._poller = asyncio.create_task(self._poll_forever(), name=f"health-{self.name}")

    async def aclose(self) -> None:
        if self.http.is_closed:
            return
        for task in (self._poller, self._rediscovery):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._poller = self._rediscovery = None
        await self.http.aclose()

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.poll_interval)
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # the poller must outlive any surprise
                log.exception("health poll of %s failed", self.name)

    async def poll_once(self) -> None:
        """`GET /health`, then `GET /v1/models` (fact sheet §6).

        /health: 200 `{"status":"healthy"}` (older builds: an empty 200) = up; 503 with
        `{"reason":"No engine initialized"}` = still loading; 503 `{"status":"unhealthy"}` = engine dead.
        /v1/models: `{"object":"list","data":[{"id":"<served name>",...}]}`; the id is what `model` must name.
        """
        short = httpx.Timeout(self.config.connect_timeout, read=max(5.0, self.config.connect_timeout))
        try:
            health = await self.http.get("/health", timeout=short)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            now = time.monotonic()
            if self._first_refused is None:
                self._first_refused = now
            if now - self._first_refused < self.config.load_grace:
                # vLLM binds the port before the stages load and listens only when they are ready.
                self._degrade(ModelState.LOADING, f"connection refused: the server is starting ({exc})")
            else:
                self._degrade(
                    ModelState.UNAVAILABLE,
                    f"connection refused for {now - self._first_refused:.0f} s: {exc}",
                )
            return
        except httpx.HTTPError as exc:
            self._degrade(ModelState.UNAVAILABLE, f"/health failed: {exc.__class__.__name__}: {exc}")
            return
        self._first_refused = None
        if health.status_code == 503:
            body = _json_or_none(health)
            reason = (body or {}).get("reason") or (body or {}).get("status") or "unhealthy"
            loading = "no engine" in str(reason).lower() or "load" in str(reason).lower()
            self._set_state(
                ModelState.LOADING if loading else ModelState.UNAVAILABLE, f"/health 503: {reason}"
            )
            return
        if health.status_code != 200:
            self._degrade(ModelState.UNAVAILABLE, f"/health answered {health.status_code}")
            return
        try:
            models = await self.http.get("/v1/models", timeout=short)
            served = tuple(
                str(m["id"]) for m in models.json().get("data", []) if isinstance(m, dict) and "id" in m
            )
        except (httpx.HTTPError, ValueError, AttributeError, TypeError) as exc:
            self._degrade(ModelState.UNAVAILABLE, f"/v1/models failed: {exc.__class__.__name__}")
            return
        self._served = served
        chosen, problem = pick_model(served, self.config.model, self.config.model_hint)
        if chosen is None:
            self._set_state(ModelState.FAILED, problem)
            return
        self._model_id = chosen
        if self._state is not ModelState.READY:
            # A (re)connect may reach another server build: check its version each time.
            await self._check_version(short)
            # Readiness includes the start-up steps (voice registration): run them on every (re)connect,
            # since a restarted server may have lost what we registered.
            for callback in self._ready_callbacks:
                try:
                    result = callback()
                    if asyncio.iscoroutine(result):
                        await result
                except Exception as exc:
                    log.warning("start-up step for %s failed: %s", self.name, exc)
                    self._set_state(ModelState.UNAVAILABLE, f"start-up step failed: {exc}")
                    return
        self._poll_failures = 0
        self._set_state(ModelState.READY, None)

    async def _check_version(self, limits: httpx.Timeout) -> None:
        """`GET /version` (vLLM's API server: `{"version": "0.30.0"}`). Never fails readiness: a server
        with another version may still work, so it is a WARNING naming what was found."""
        try:
            answer = await self.http.get("/version", timeout=limits)
            body = answer.json() if answer.status_code == 200 else None
            version = str(body.get("version") or "") if isinstance(body, dict) else ""
        except (httpx.HTTPError, ValueError) as exc:
            answer, version = None, ""
            log.debug("GET /version of %s failed: %s", self.name, exc)
        self._server_version = version or None
        if not version:
            status = answer.status_code if answer is not None else "no answer"
            log.warning(
                "backend %s (%s): GET /version gave no version (%s); this gateway speaks vLLM-Omni %s's wire "
                "format and cannot tell which one this server speaks",
                self.name,
                self.config.url,
                status,
                WIRE_VERSION_TEXT,
            )
        elif not wire_version_matches(version):
            log.warning(
                "backend %s (%s) reports version %s, but this gateway was built and tested against the "
                "vLLM-Omni %s.x wire format: requests may be refused or answers misread",
                self.name,
                self.config.url,
                version,
                WIRE_VERSION_TEXT[:4],
            )
        else:
            log.info("backend %s (%s): server version %s", self.name, self.config.url, version)

    def rediscover(self) -> None:
        """Re-read /v1/models now, in the background (the server answered 404 for our model name: it may
        have been restarted with another served name)."""
        if self._rediscovery is None or self._rediscovery.done():
            self._rediscovery = asyncio.create_task(self.poll_once(), name=f"rediscover-{self.name}")

    # -- requests ----------------------------------------------------------------------------
    def check_usable(self, component: str) -> None:
        """Fail fast where a request cannot succeed: the model is loading (connections are refused) or the
        configuration is wrong. An UNAVAILABLE backend is still tried: the breaker decides, and a success
        brings it back at once instead of at the next poll."""
        if self._state in (ModelState.LOADING, ModelState.FAILED):
            code = "backend_loading" if self._state is ModelState.LOADING else "backend_unavailable"
            state = self._state.value
            raise unavailable(
                self.name, f"the {self.name} backend ({component}) is {state}: {self._detail}", code
            )

    def admit(self) -> None:
        if not self.breaker.allow():
            self.stats.count("rejected")
            self.stats.fail("backend_circuit_open")
            raise BackendError(
                "backend_circuit_open",
                self.name,
                f"the {self.name} backend failed repeatedly; not retrying for "
                f"{self.breaker.retry_after():.1f} s",
            )

    def _connect_error(self, exc: Exception) -> BackendError:
        if self._state is ModelState.LOADING:
            return unavailable(
                self.name, f"the {self.name} backend is still loading its model", "backend_loading"
            )
        return unavailable(self.name, f"cannot connect to the {self.name} backend: {exc.__class__.__name__}")

    def record_failure(self, err: BackendError) -> None:
        self.stats.fail(err.code)
        if err.counts:
            self.breaker.failure()
        else:
            self.breaker.release()

    def record_success(self) -> None:
        self.breaker.success()
        if self._state is ModelState.UNAVAILABLE and self._model_id:
            # A request got through: the server is up even if the poller has not noticed yet.
            self._poll_failures = 0
            self._set_state(ModelState.READY, None)

    @contextlib.asynccontextmanager
    async def stream(
        self, method: str, path: str, *, json_body: Any = None, **kwargs: Any
    ) -> AsyncIterator[BackendResponse]:
        """Open a request and yield once the status line and headers are in.

        Retries (with backoff) happen here, before any byte of a body has been handed to the caller.
        Errors while the caller reads the body are reported through `BackendResponse` helpers and count
        against the breaker; leaving the block early (the caller went away) closes the response at once.
        """
        self.admit()
        deadline = time.monotonic() + self.config.total_timeout
        attempt = 0
        response: httpx.Response | None = None
        try:
            while True:
                attempt += 1
                try:
                    request = self.http.build_request(
                        method, path, json=json_body, headers=self._trace_headers(), **kwargs
                    )
                    response = await self.http.send(request, stream=True)
                except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                    err: BackendError = self._connect_error(exc)
                except httpx.TimeoutException:
                    err = timed_out(
                        self.name,
                        f"the {self.name} backend sent no response within {self.config.read_timeout:g} s",
                    )
                    raise err from None
                except httpx.HTTPError as exc:
                    err = bad_answer(self.name, f"the {self.name} backend failed: {exc.__class__.__name__}")
                    raise err from None
                else:
                    if response.status_code not in _RETRY_STATUSES:
                        break
                    err = await self._status_error(response)
                    await response.aclose()
                    response = None
                if attempt > self.config.retries or time.monotonic() >= deadline:
                    raise err
                self.stats.retries += 1
                await asyncio.sleep(
                    min(self.config.backoff * 2 ** (attempt - 1), max(0.0, deadline - time.monotonic()))
                )
            if response.status_code >= 400:
                raise await self._status_error(response)
            wrapped = BackendResponse(self, response, deadline)
            yield wrapped
            self.stats.count("ok")
            self.record_success()
        except BackendError as err:
            if err.backend != self.name:  # another backend failed inside this block: no verdict on ours
                self.breaker.release()
                raise
            self.stats.count("error")
            self.record_failure(err)
            raise
        except BaseException:
            # The caller went away (GeneratorExit / CancelledError) or failed on its own: no verdict.
            self.breaker.release()
            raise
        finally:
            if response is not None:
                await response.aclose()

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config.api_key}"} if self.config.api_key else {}

    def _trace_headers(self) -> dict[str, str]:
        """`X-Request-Id` sets vLLM's request id ([E]): the gateway's request id (from the log context)
        plus a sequence number, so one client request's backend calls are findable in the server's logs
        and stay unique when several run at once (sentence pipelining)."""
        from gateway.logging_setup import request_id_var

        self._sequence += 1
        return {"X-Request-Id": f"{request_id_var.get() or 'gw'}-{self.name}-{self._sequence}"}

    async def _status_error(self, response: httpx.Response) -> BackendError:
        try:
            raw = await response.aread()
        except httpx.HTTPError:
            raw = b""
        message, kind, param = _error_fields(raw)
        message = message or response.reason_phrase
        status = response.status_code
        if status == 503:
            return unavailable(self.name, f"the {self.name} backend is unavailable (503): {message}")
        if status == 504:
            return timed_out(self.name, f"the {self.name} backend timed out upstream (504): {message}")
        if 400 <= status < 500:
            # Our request was refused; the server itself is fine (no breaker verdict). vLLM answers 404
            # `NotFoundError` with param "model" for a served name it does not serve (any more).
            if status == 404 and param == "model":
                self.rediscover()
            return BackendError(
                "backend_rejected",
                self.name,
                f"the {self.name} backend refused the request ({status} {kind or response.reason_phrase}): "
                f"{message}",
                counts=False,
                upstream_status=status,
                upstream_type=kind,
                upstream_message=message,
            )
        return BackendError(
            "backend_bad_response",
            self.name,
            f"the {self.name} backend answered {status}: {message}",
            upstream_status=status,
            upstream_type=kind,
            upstream_message=message,
        )

    async def request_json(self, method: str, path: str, *, json_body: Any = None, **kwargs: Any) -> Any:
        async with self.stream(method, path, json_body=json_body, **kwargs) as resp:
            raw = await resp.read_all()
            try:
                return json.loads(raw)
            except ValueError:
                raise bad_answer(self.name, f"the {self.name} backend sent malformed JSON") from None


class BackendResponse:
    """A streaming response whose reads enforce the total deadline and map transport errors."""

    def __init__(self, client: BackendClient, response: httpx.Response, deadline: float) -> None:
        self._client = client
        self.response = response
        self.deadline = deadline
        self.bytes_read = 0

    @property
    def name(self) -> str:
        return self._client.name

    def _check_deadline(self) -> None:
        if time.monotonic() > self.deadline:
            raise timed_out(
                self.name,
                f"the {self.name} backend did not finish within {self._client.config.total_timeout:g} s",
            )

    async def iter_bytes(self) -> AsyncGenerator[bytes, None]:
        try:
            async for chunk in self.response.aiter_raw():
                self.bytes_read += len(chunk)
                self._check_deadline()
                yield chunk
        except httpx.TimeoutException:
            raise timed_out(
                self.name,
                f"the {self.name} backend stalled for {self._client.config.read_timeout:g} s mid-response",
            ) from None
        except httpx.HTTPError as exc:
            raise bad_answer(
                self.name, f"the {self.name} backend broke off its response: {exc.__class__.__name__}"
            ) from None

    async def iter_lines(self) -> AsyncGenerator[str, None]:
        buffer = b""
        async for chunk in self.iter_bytes():
            buffer += chunk
            while True:
                cut = buffer.find(b"\n")
                if cut < 0:
                    break
                line, buffer = buffer[:cut], buffer[cut + 1 :]
                yield line.rstrip(b"\r").decode("utf-8", errors="replace")
        if buffer:
            yield buffer.decode("utf-8", errors="replace")

    async def read_all(self) -> bytes:
        parts = [chunk async for chunk in self.iter_bytes()]
        return b"".join(parts)


def pick_model(served: tuple[str, ...], configured: str, hint: str) -> tuple[str | None, str | None]:
    """The id to send as `model`: vLLM answers 404 for any other name (fact sheet §2)."""
    if not served:
        return None, "the server lists no model at /v1/models"
    if configured:
        if configured in served:
            return configured, None
        return None, f"configured model {configured!r} is not served; the server serves: {', '.join(served)}"
    if len(served) == 1:
        return served[0], None
    hinted = [m for m in served if hint and hint.lower() in m.lower()]
    if hinted:
        return hinted[0], None
    return None, f"the server serves several models ({', '.join(served)}); set the model name explicitly"


def _json_or_none(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _error_fields(raw: bytes) -> tuple[str, str, str | None]:
    """(message, type, param) of an error answer. vLLM's is `{"error": {"message", "type", "param",
    "code"}}` (what vLLM-Omni 0.30.0 answered, e.g. 404 `NotFoundError` "The model `x` does not exist.");
    vLLM's `--api-key` guard answers `{"error": "Unauthorized"}`; anything else is passed on as text."""
    try:
        body = json.loads(raw)
    except ValueError:
        return raw[:200].decode("utf-8", errors="replace").strip(), "", None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            param = err.get("param")
            return str(err["message"])[:300], str(err.get("type") or ""), str(param) if param else None
        if isinstance(err, str) and err:
            return err[:300], "", None
        for key in ("message", "detail", "reason", "status"):
            if body.get(key):
                return str(body[key])[:300], "", None
    return str(body)[:200], "", None


class BackendCollector(Collector):
    """Prometheus families for every backend client: requests, failures by code, retries, breaker state."""

    def __init__(self, clients: Iterable[BackendClient]) -> None:
        self._clients = list(clients)

    def collect(self) -> Iterable[Any]:
        requests = CounterMetricFamily(
            "voice_gateway_backend_requests",
            "Requests to model backends by outcome",
            labels=["backend", "outcome"],
        )
        failures = CounterMetricFamily(
            "voice_gateway_backend_failures",
            "Failed backend requests by error code (timeouts, refused, bad answers, breaker rejections)",
            labels=["backend", "code"],
        )
        retries = CounterMetricFamily(
            "voice_gateway_backend_retries",
            "Backend requests retried before any response byte",
            labels=["backend"],
        )
        opened = CounterMetricFamily(
            "voice_gateway_backend_circuit_opened",
            "Times the backend's circuit breaker opened",
            labels=["backend"],
        )
        breaker = GaugeMetricFamily(
            "voice_gateway_backend_circuit_open",
            "1 while the backend's circuit breaker is open (requests fail fast), else 0",
            labels=["backend"],
        )
        for c in self._clients:
            for outcome, n in c.stats.requests.items():
                requests.add_metric([c.name, outcome], n)
            for code, n in c.stats.failures.items():
                failures.add_metric([c.name, code], n)
            retries.add_metric([c.name], c.stats.retries)
            opened.add_metric([c.name], c.breaker.opened_total)
            breaker.add_metric([c.name], 0 if c.breaker.state is BreakerState.CLOSED else 1)
        yield from (requests, failures, retries, opened, breaker)

    def describe(self) -> Iterable[Any]:
        return ()
