//! The capture payload decoder: any bytes, under any of the content types,
//! encodings and `compression` parameters PostHog's SDKs send, must give
//! either events or a 4xx error; never a panic, never a 5xx.
#![no_main]

use dropscope_server::capture::{parse_capture, CaptureInput, CaptureParams};
use dropscope_server::Limits;
use libfuzzer_sys::fuzz_target;

const CONTENT_TYPES: [Option<&str>; 4] = [
    None,
    Some("application/json"),
    Some("application/x-www-form-urlencoded"),
    Some("text/plain"),
];
const ENCODINGS: [Option<&str>; 3] = [None, Some("gzip"), Some("br")];
const COMPRESSIONS: [Option<&str>; 5] = [None, Some("gzip-js"), Some("gzip"), Some("base64"), Some("lz64")];

fuzz_target!(|data: &[u8]| {
    // The first byte picks how the request is framed; the rest is the body.
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let params = CaptureParams {
        compression: COMPRESSIONS[(sel as usize >> 4) % COMPRESSIONS.len()].map(str::to_string),
        token: (sel & 1 == 1).then(|| "phc_fuzz".to_string()),
        api_key: None,
    };
    let input = CaptureInput {
        body,
        content_type: CONTENT_TYPES[sel as usize % CONTENT_TYPES.len()],
        content_encoding: ENCODINGS[(sel as usize >> 2) % ENCODINGS.len()],
        params: &params,
    };
    // Small limits, so the fuzzer reaches them.
    let limits = Limits {
        max_body_bytes: 64 * 1024,
        max_events_per_batch: 50,
        max_event_bytes: 4 * 1024,
        max_property_depth: 8,
    };
    match parse_capture(input, &limits, 1_700_000_000_000) {
        Ok(c) => {
            for e in &c.events {
                assert!(!e.event.is_empty(), "an event without a name was accepted");
                assert!(!e.distinct_id.is_empty(), "an event without a distinct_id was accepted");
            }
            assert!(c.events.len() <= limits.max_events_per_batch);
        }
        Err(e) => assert!(
            e.status().is_client_error(),
            "status {} for {e}",
            e.status()
        ),
    }
});
