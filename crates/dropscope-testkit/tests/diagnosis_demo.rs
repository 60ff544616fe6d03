//! The diagnosis names the causes planted in the demo data, and the
//! Simpson's-paradox check fires where a breakdown reverses a signal.

use dropscope_core::query::FunnelQuery;
use dropscope_core::result::QueryResult;
use dropscope_store::{Record, Store};
use dropscope_testkit::demo::{
    generate, DemoOptions, DEMO_FUNNEL, PLANTED_BROWSER, TUTORIAL_EVENT,
};
use serde_json::json;

#[test]
fn diagnosis_names_the_planted_causes() {
    let store = Store::in_memory();
    let recs: Vec<Record> = generate(&DemoOptions {
        seed: 3,
        events: 150_000,
        ..Default::default()
    })
    .collect();
    store.append(&recs).unwrap();
    let steps: Vec<_> = DEMO_FUNNEL.iter().map(|e| json!({"event": e})).collect();
    let q =
        FunnelQuery::from_json(json!({"kind": "diagnosis", "steps": steps, "date_from": "all"}))
            .unwrap();
    let QueryResult::Diagnosis(d) =
        dropscope_engine::run_query(&store.snapshot().unwrap(), &q).unwrap()
    else {
        panic!("not a diagnosis")
    };
    let text = dropscope_engine::diagnosis::render_text(&d);
    let tutorial = d
        .drivers
        .iter()
        .find(|x| x.kind == "event" && x.row.event == TUTORIAL_EVENT)
        .unwrap_or_else(|| panic!("the tutorial driver is missing:\n{text}"));
    assert_eq!(tutorial.row.correlation_type, "success");
    assert!(tutorial.row.q_value < 0.05);
    let adjusted = tutorial
        .row
        .adjusted_odds_ratio
        .expect("adjusted odds ratio");
    assert!(
        adjusted > 1.5,
        "the adjusted analysis keeps the tutorial: {adjusted}\n{text}"
    );
    let browser = d
        .segments
        .iter()
        .find(|s| s.property == "$browser" && s.value == PLANTED_BROWSER)
        .unwrap_or_else(|| panic!("the planted browser segment is missing:\n{text}"));
    assert_eq!(browser.direction, "lower");
    assert!(browser.q_value < 0.05);
    assert!(d.paths.is_some());
    // The report's segment lines align: each rate starts in one column,
    // whatever the length of `property=value`.
    let rate_columns: std::collections::HashSet<usize> = text
        .split("Segments converting differently")
        .nth(1)
        .expect("a segments section")
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.chars().position(|c| c == '%').expect("a rate"))
        .collect();
    assert!(d.segments.len() >= 2, "{text}");
    assert_eq!(rate_columns.len(), 1, "segment lines misaligned:\n{text}");
    // So do the drivers' lines, events and person properties alike.
    let odds_columns: std::collections::HashSet<usize> = text
        .split("Drivers (")
        .nth(1)
        .expect("a drivers section")
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.find(" odds ").expect("an odds ratio"))
        .collect();
    let kinds: std::collections::HashSet<&str> =
        d.drivers.iter().map(|x| x.kind.as_str()).collect();
    assert!(
        kinds.len() >= 2,
        "drivers of one kind only: {kinds:?}\n{text}"
    );
    assert_eq!(odds_columns.len(), 1, "driver lines misaligned:\n{text}");
}

/// Within each segment the signal goes with converting, but the segment
/// that has it most converts least: the crude odds ratio says "failure",
/// the Mantel–Haenszel one "success".
#[test]
fn simpson_warning_fires_when_segments_reverse_the_signal() {
    let store = Store::in_memory();
    let mut recs = Vec::new();
    let mut uuid = 0u128;
    let mut push = |d: &str, e: &str, t: i64, props: serde_json::Value, recs: &mut Vec<Record>| {
        uuid += 1;
        recs.push(Record::Event(dropscope_core::event::Event {
            uuid,
            event: e.into(),
            distinct_id: d.into(),
            timestamp: 1_620_000_000_000 + t * 1000,
            properties: props.as_object().cloned().unwrap_or_default(),
        }));
    };
    // (segment, has signal, converts, people)
    let groups = [
        ("A", true, true, 8),
        ("A", true, false, 72),
        ("A", false, true, 0),
        ("A", false, false, 20),
        ("B", true, true, 20),
        ("B", false, true, 70),
        ("B", true, false, 2),
        ("B", false, false, 30),
    ];
    let mut p = 0;
    for (seg, signal, converts, n) in groups {
        for _ in 0..n {
            p += 1;
            let d = format!("p{p}");
            push(&d, "start", 0, json!({"seg": seg}), &mut recs);
            if signal {
                push(&d, "signal", 10, json!({}), &mut recs);
            }
            if converts {
                push(&d, "end", 20, json!({}), &mut recs);
            }
        }
    }
    store.append(&recs).unwrap();
    let q = FunnelQuery::from_json(json!({
        "kind": "correlation",
        "steps": [{"event": "start"}, {"event": "end"}],
        "date_from": "2021-05-01", "date_to": "2021-05-31",
        "breakdown": {"property": "seg"},
        "correlation": {"type": "events", "min_person_count": 1},
    }))
    .unwrap();
    let QueryResult::Correlation(r) =
        dropscope_engine::run_query(&store.snapshot().unwrap(), &q).unwrap()
    else {
        panic!("not a correlation")
    };
    let row = r
        .events
        .iter()
        .find(|x| x.event == "signal")
        .expect("signal row");
    assert_eq!(row.correlation_type, "failure", "{row:?}");
    let w = row.simpson_warning.as_deref().expect("a Simpson warning");
    assert!(w.contains("success"), "{w}");
}
