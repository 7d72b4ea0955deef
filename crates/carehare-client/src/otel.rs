//! OpenTelemetry context propagation through message headers (the `otel`
//! feature): a publisher injects the current trace context (W3C
//! `traceparent` and `tracestate` with the usual propagator) into a
//! message's headers, and a consumer extracts it, so a trace follows the
//! message through RabbitMQ.
//!
//! The functions without `_with` use the process-wide propagator that an
//! application sets with
//! `opentelemetry::global::set_text_map_propagator` (e.g. the SDK's
//! `TraceContextPropagator`); until it does, they inject and extract
//! nothing, as every OpenTelemetry instrumentation does.
//!
//! ```
//! use carehare_client::BasicProperties;
//! use carehare_client::otel::{extract_context, inject_context};
//! use opentelemetry::Context;
//!
//! let mut properties = BasicProperties::default();
//! inject_context(&Context::current(), &mut properties);
//! // ... publish with `properties`; on the consumer's side:
//! let parent = extract_context(&properties);
//! # drop(parent);
//! ```

use carehare_core::properties::BasicProperties;
use carehare_core::types::{AMQPValue, FieldTable, ShortString};
use opentelemetry::Context;
use opentelemetry::global;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};

/// Writes propagation fields into a header table, as long strings. A key
/// longer than a `shortstr` allows is skipped (no propagator uses one).
#[derive(Debug)]
pub struct HeaderInjector<'a>(pub &'a mut FieldTable);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let Ok(key) = ShortString::try_new(key) {
            self.0
                .insert(key, AMQPValue::LongString(value.into_bytes().into()));
        }
    }
}

/// Reads propagation fields from a header table: long and short strings
/// that are valid UTF-8; anything else reads as absent.
#[derive(Debug)]
pub struct HeaderExtractor<'a>(pub &'a FieldTable);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match self.0.inner().get(key)? {
            AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
            AMQPValue::ShortString(s) => Some(s.as_str()),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.0.inner().keys().map(ShortString::as_str).collect()
    }
}

/// Injects `cx` into `properties`' headers (creating them if needed) with
/// the process-wide propagator.
pub fn inject_context(cx: &Context, properties: &mut BasicProperties) {
    global::get_text_map_propagator(|propagator| {
        inject_context_with(propagator, cx, properties);
    });
}

/// Injects `cx` into `properties`' headers with `propagator`.
pub fn inject_context_with(
    propagator: &dyn TextMapPropagator,
    cx: &Context,
    properties: &mut BasicProperties,
) {
    let headers = properties.headers.get_or_insert_with(FieldTable::default);
    propagator.inject_context(cx, &mut HeaderInjector(headers));
}

/// The context carried in `properties`' headers, read with the
/// process-wide propagator (an empty context if there is none).
pub fn extract_context(properties: &BasicProperties) -> Context {
    global::get_text_map_propagator(|propagator| extract_context_with(propagator, properties))
}

/// The context carried in `properties`' headers, read with `propagator`.
pub fn extract_context_with(
    propagator: &dyn TextMapPropagator,
    properties: &BasicProperties,
) -> Context {
    match &properties.headers {
        Some(headers) => propagator.extract(&HeaderExtractor(headers)),
        None => propagator.extract(&HeaderExtractor(&FieldTable::default())),
    }
}
