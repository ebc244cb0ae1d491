use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Keeps exporters alive until the command ends, then flushes them.
pub struct Guard {
    #[cfg(feature = "otel")]
    _otel: Option<otel::Guard>,
}

/// Logs go to stderr; `RUST_LOG` overrides the default `info` level. Built
/// with the `otel` feature and given `OTEL_EXPORTER_OTLP_ENDPOINT`, spans are
/// also exported over OTLP/HTTP.
pub fn init(format: LogFormat) -> Guard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let fmt: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed(),
    };
    let registry = tracing_subscriber::registry().with(fmt);
    #[cfg(feature = "otel")]
    {
        let (layer, guard) = otel::layer();
        registry.with(layer).with(filter).init();
        Guard { _otel: guard }
    }
    #[cfg(not(feature = "otel"))]
    {
        registry.with(filter).init();
        Guard {}
    }
}

#[cfg(feature = "otel")]
mod otel {
    use opentelemetry::trace::TracerProvider;
    use opentelemetry_otlp::WithExportConfig;
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::Layer;

    pub struct Guard(SdkTracerProvider);

    impl Drop for Guard {
        fn drop(&mut self) {
            if let Err(err) = self.0.shutdown() {
                eprintln!("flushing OpenTelemetry spans failed: {err}");
            }
        }
    }

    type Boxed = Box<
        dyn Layer<
                tracing_subscriber::layer::Layered<
                    Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>,
                    tracing_subscriber::Registry,
                >,
            > + Send
            + Sync,
    >;

    /// An OTLP/HTTP span exporter when `OTEL_EXPORTER_OTLP_ENDPOINT` is set
    /// (the standard variable; `OTEL_SERVICE_NAME` names the service).
    pub fn layer() -> (Option<Boxed>, Option<Guard>) {
        let Ok(endpoint) = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") else {
            return (None, None);
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
            .build();
        let exporter = match exporter {
            Ok(exporter) => exporter,
            Err(err) => {
                eprintln!("OpenTelemetry export disabled: {err}");
                return (None, None);
            }
        };
        let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "strut".into());
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(Resource::builder().with_service_name(service).build())
            .build();
        let layer = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("strut"))
            .boxed();
        strut_server::set_trace_context_hook(continue_trace);
        (Some(layer), Some(Guard(provider)))
    }

    /// A request that carries W3C `traceparent` joins the caller's trace, so
    /// a gateway's span and strut's request span show as one trace.
    fn continue_trace(headers: &strut_server::HeaderMap, span: &tracing::Span) {
        use opentelemetry::propagation::TextMapPropagator;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        if !headers.contains_key("traceparent") {
            return;
        }
        let parent = TraceContextPropagator::new().extract(&Headers(headers));
        // Fails only when no OpenTelemetry layer sees the span; then there is nothing to link.
        let _ = span.set_parent(parent);
    }

    struct Headers<'a>(&'a strut_server::HeaderMap);

    impl opentelemetry::propagation::Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key)?.to_str().ok()
        }

        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(|k| k.as_str()).collect()
        }
    }
}
