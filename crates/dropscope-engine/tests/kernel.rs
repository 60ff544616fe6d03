//! The fast kernel (`dropscope_engine::kernel`) against the general path.
//!
//! The same funnel is asked twice: as is (the kernel takes it) and with an
//! exclusion on an event name that never occurs (the kernel refuses it,
//! and such an exclusion cannot change any answer). Logs are random with
//! few persons, few event names and many identical timestamps, so runs of
//! step-1 events, events of several steps and rule 5's pairing all occur;
//! the three orders the kernel takes (ordered, strict, unordered) and date
//! ranges that cut attempts are drawn. Every field of the result must be equal. The log
//! goes in in two parts, read between them: when the second is small, the
//! store keeps two runs and the persons in both are actors of several
//! slices, which the kernel reads one by one rather than in blocks.

mod common;

use common::{events, force_general_path, funnel, run, store_of};
use proptest::prelude::*;

const NAMES: [&str; 4] = ["a", "b", "c", "d"];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(common::cases()))]

    #[test]
    fn kernel_equals_general_path(
        log in prop::collection::vec((0u8..12, 0u8..4, 0i64..40), 0..160),
        cut in 0usize..160,
        steps in prop::collection::vec(0u8..4, 2..6),
        order in prop::sample::select(vec!["ordered", "strict", "unordered"]),
        window in 1i64..30,
        range in prop::option::of((0i64..20, 20i64..45)),
    ) {
        let recs = events(&log, &NAMES);
        let s = store_of(&recs[..cut.min(recs.len())]);
        s.snapshot().expect("snapshot");
        s.append(&recs[cut.min(recs.len())..]).expect("append");
        let mut fast = funnel(&steps, &NAMES, false, window, range);
        fast["order"] = serde_json::json!(order);
        let mut general = fast.clone();
        force_general_path(&mut general, steps.len());
        let (a, b) = (run(&s, &fast), run(&s, &general));
        prop_assert_eq!(
            serde_json::to_value(&a).expect("json"),
            serde_json::to_value(&b).expect("json")
        );
    }
}

/// A value of the breakdown property: absent, an empty string (attribution
/// skips both), two strings or a number.
fn city(i: u8) -> Option<serde_json::Value> {
    match i {
        0 => None,
        1 => Some(serde_json::json!("")),
        2 => Some(serde_json::json!("Oslo")),
        3 => Some(serde_json::json!("Lima")),
        _ => Some(serde_json::json!(7)),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(common::cases()))]

    /// Breakdowns by one event property, first or last touch, which the
    /// kernel attributes from the kept rows of a block: the same rows, the
    /// same values and the same counts per value as the general path,
    /// "Other" included (a limit of 2).
    #[test]
    fn kernel_breakdown_equals_general_path(
        log in prop::collection::vec((0u8..12, 0u8..4, 0i64..40, 0u8..5), 0..160),
        cut in 0usize..160,
        steps in prop::collection::vec(0u8..4, 2..5),
        order in prop::sample::select(vec!["ordered", "strict", "unordered"]),
        last in any::<bool>(),
        limit in prop::option::of(1usize..3),
        window in 1i64..30,
        range in prop::option::of((0i64..20, 20i64..45)),
    ) {
        let mut recs = events(
            &log.iter().map(|&(p, n, t, _)| (p, n, t)).collect::<Vec<_>>(),
            &NAMES,
        );
        for (r, &(_, _, _, c)) in recs.iter_mut().zip(&log) {
            if let (dropscope_store::Record::Event(e), Some(v)) = (r, city(c)) {
                e.properties.insert("city".into(), v);
            }
        }
        let cut = cut.min(recs.len());
        let s = store_of(&recs[..cut]);
        s.snapshot().expect("snapshot");
        s.append(&recs[cut..]).expect("append");
        let mut fast = funnel(&steps, &NAMES, false, window, range);
        fast["order"] = serde_json::json!(order);
        fast["breakdown"] = serde_json::json!({
            "type": "event", "property": "city",
            "attribution": if last { "last_touch" } else { "first_touch" },
            "limit": limit,
        });
        let mut general = fast.clone();
        force_general_path(&mut general, steps.len());
        let (a, b) = (run(&s, &fast), run(&s, &general));
        prop_assert_eq!(
            serde_json::to_value(&a).expect("json"),
            serde_json::to_value(&b).expect("json")
        );
    }
}
