"""OpenTelemetry traces of requests: the one seam between crossroads and the opentelemetry packages.

The server opens a span per request (``crossroads.chat``, ``crossroads.route``, ``crossroads.feedback``); the
gateway adds ``crossroads.decide`` and one ``crossroads.upstream`` per model tried, as its children, and one
``crossroads.shadow`` per shadow call (a child that ends after the request's span).  Each upstream and shadow
call sends its span's ``traceparent`` to the model's endpoint, so a provider that traces joins the trace.
Attributes hold names, ids, counts and prices, never a prompt, an answer or a key.

Tracing is off by default: :data:`NO_TRACER` then does nothing, and opentelemetry is never imported.  On
(``tracing: {enabled: true}``), :func:`build_tracer` imports it, so the ``otel`` extra is needed only then.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from typing import Any

from crossroads.errors import CrossroadsError
from crossroads.serve.config import TracingConfig
from crossroads.upstream.http import CALL_HEADERS

#: The instrumentation scope every crossroads span carries.
SCOPE = "crossroads.serve"
PREFIX = "crossroads."


class NoSpan:
    """A span that records nothing: what every call returns while tracing is off."""

    def set(self, attributes: dict[str, Any] | None = None, **values: Any) -> None:
        pass

    def event(self, name: str, **values: Any) -> None:
        pass

    def fail(self, description: str) -> None:
        pass

    def end(self) -> None:
        pass

    def propagate(self) -> None:
        pass

    def __enter__(self) -> NoSpan:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


NO_SPAN = NoSpan()


class NoTracer:
    """Tracing off: each method returns at once, without a lookup or an allocation."""

    enabled = False

    def request(self, name: str, headers: Any = None, attributes: dict[str, Any] | None = None) -> NoSpan:
        return NO_SPAN

    def start(self, name: str, parent: Any = None, **values: Any) -> NoSpan:
        return NO_SPAN

    def current(self) -> None:
        return None

    def note(self, **values: Any) -> None:
        pass

    def shutdown(self) -> None:
        pass


NO_TRACER = NoTracer()


class Span:
    """An OpenTelemetry span; keyword attributes are named ``crossroads.<name>``, None values are left out."""

    def __init__(self, otel_span: Any):
        self.otel = otel_span
        self.token: Token | None = None  # a request's span: what restores the task's previous parent (see leave)
        self._ended = False

    def set(self, attributes: dict[str, Any] | None = None, **values: Any) -> None:
        """Set ``attributes`` under their own names and ``values`` as ``crossroads.<keyword>`` (not once ended)."""
        if not self._ended:
            self.otel.set_attributes(_attributes(attributes, values))

    def event(self, name: str, **values: Any) -> None:
        if not self._ended:
            self.otel.add_event(name, _attributes(None, values))

    def fail(self, description: str) -> None:
        """Mark the span as an error (what it timed failed)."""
        from opentelemetry.trace import Status, StatusCode

        if not self._ended:
            self.otel.set_status(Status(StatusCode.ERROR, description))

    def end(self) -> None:
        """End the span; later calls do nothing (a failed attempt is ended twice on the way out)."""
        if not self._ended:
            self._ended = True
            self.otel.end()

    def headers(self) -> dict[str, str]:
        """The W3C trace context naming this span (``traceparent``), for a call it times to another service."""
        from opentelemetry.propagate import inject
        from opentelemetry.trace import set_span_in_context

        carrier: dict[str, str] = {}
        inject(carrier, context=set_span_in_context(self.otel))
        return carrier

    def propagate(self) -> None:
        """Make the upstream calls of the current task carry this span's trace context (see ``CALL_HEADERS``)."""
        CALL_HEADERS.set(self.headers())

    def __enter__(self) -> Span:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: Any) -> None:
        if kind is not None:
            self.fail(kind.__name__)
        self.end()


#: The span of the request this task serves (set by :meth:`Tracer.request`); a task started while serving it, such
#: as a stream being opened, inherits it.
_request_span: ContextVar[Span | None] = ContextVar("crossroads_request_span", default=None)


class Tracer:
    """Spans of one TracerProvider (its own, not the global one), exported as the config says."""

    enabled = True

    def __init__(self, provider: Any):
        from opentelemetry.propagate import extract
        from opentelemetry.trace import SpanKind, set_span_in_context

        self.provider = provider
        self._otel = provider.get_tracer(SCOPE)
        self._extract, self._in_context, self._server = extract, set_span_in_context, SpanKind.SERVER

    def request(self, name: str, headers: Any = None, attributes: dict[str, Any] | None = None) -> Span:
        """Start the span of a request (a child of the caller's ``traceparent`` header, if it sent one) and make it
        the parent of the spans started while serving it, until :func:`leave`."""
        context = self._extract(dict(headers)) if headers is not None else None
        span = Span(self._otel.start_span(name, context=context, kind=self._server,
                                          attributes=_attributes(attributes, {})))
        span.token = _request_span.set(span)
        return span

    def start(self, name: str, parent: Span | None = None, **values: Any) -> Span:
        """Start a child span of ``parent``, by default the current request's span (a root span outside a request)."""
        parent = parent or _request_span.get()
        context = self._in_context(parent.otel) if parent is not None else None
        return Span(self._otel.start_span(name, context=context, attributes=_attributes(None, values)))

    def current(self) -> Span | None:
        """The span of the request being served in this task, if any: to parent work that outlives the task's
        context, such as the shadow calls made when a stream ends."""
        return _request_span.get()

    def note(self, **values: Any) -> None:
        """Set ``crossroads.<keyword>`` attributes on the current request's span, if there is one."""
        parent = _request_span.get()
        if parent is not None:
            parent.set(**values)

    def shutdown(self) -> None:
        """Export the spans still queued, then stop."""
        self.provider.shutdown()


def leave(span: Span | NoSpan) -> None:
    """Stop making ``span`` (from :meth:`Tracer.request`) the parent of new spans in this task; it stays open."""
    token = getattr(span, "token", None)
    if token is not None:
        _request_span.reset(token)
        span.token = None


def build_tracer(config: TracingConfig, exporter: Any = None) -> NoTracer | Tracer:
    """The tracer ``config`` asks for: :data:`NO_TRACER` unless ``config.enabled``.

    ``exporter`` (an OpenTelemetry SpanExporter, e.g. the SDK's InMemorySpanExporter in tests) replaces the
    configured one and gets each span as it ends.
    """
    if not config.enabled:
        return NO_TRACER
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    except ImportError as error:
        raise CrossroadsError(f"config: tracing.enabled needs OpenTelemetry ({error.name} is missing): "
                              "pip install 'crossroads[otel]'") from None
    provider = TracerProvider(resource=Resource.create({"service.name": config.service_name}),
                              sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    elif config.exporter == "console":
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    else:  # spans queue in memory and go out from a background thread: a slow collector never delays a request
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as error:
            raise CrossroadsError(f"config: tracing.exporter otlp needs the OTLP/HTTP exporter ({error.name} is "
                                  "missing): pip install 'crossroads[otel]'") from None
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=config.endpoint)))
    return Tracer(provider)


def _attributes(attributes: dict[str, Any] | None, values: dict[str, Any]) -> dict[str, Any]:
    named = {key: value for key, value in (attributes or {}).items() if value is not None}
    named.update((PREFIX + key, value) for key, value in values.items() if value is not None)
    return named
