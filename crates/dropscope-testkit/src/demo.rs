//! Deterministic, realistic demo data for `dropscope demo`.
//!
//! [`generate`] produces a stream of [`Record`]s that looks like a small
//! product's analytics: heavy-tailed activity per person, ~40 event names
//! with Zipf popularity, daily and weekly seasonality (plus one launch-day
//! spike), anonymous users who identify at signup (the `$identify` joins
//! their earlier anonymous events), person properties set via `$set`,
//! companies as groups with `$groupidentify`, and the funnel
//! [`DEMO_FUNNEL`] with realistic drop-off.
//!
//! Two causes are planted so that correlation / driver analyses have
//! something to find:
//! * people who did [`TUTORIAL_EVENT`] (between `signup_completed` and
//!   `onboarding_done`) reach `first_purchase` about twice as often;
//! * people on [`PLANTED_BROWSER`] reach `onboarding_done` and
//!   `first_purchase` about half as often (from `signup_completed`).
//!
//! plus a mild confound: `plan = pro` people watch the tutorial more often
//! and also convert a bit more, so the naive tutorial effect is slightly
//! larger than the planted one.
//!
//! The output is a pure function of [`DemoOptions`]: every person is planned
//! from its own PRNG stream seeded by `(seed, person index)`, and records come
//! out in timestamp order (ties in a fixed order), as a live product would
//! send them. Memory is a small plan per person (session start times and
//! counts) plus the events of the sessions currently open.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use dropscope_core::event::{format_uuid, Event};
use dropscope_store::Record;
use serde_json::{Map, Value};

/// The planted conversion funnel, in order.
pub const DEMO_FUNNEL: [&str; 5] = [
    "$pageview",
    "signup_started",
    "signup_completed",
    "onboarding_done",
    "first_purchase",
];

/// The demo funnel ([`DEMO_FUNNEL`]) over all data, with the default
/// 14-day window: what `dropscope demo` prints and the benchmark times.
pub fn funnel_query() -> dropscope_core::query::FunnelQuery {
    dropscope_core::query::FunnelQuery {
        steps: DEMO_FUNNEL
            .iter()
            .map(|e| dropscope_core::query::Step {
                event: Some(e.to_string()),
                ..Default::default()
            })
            .collect(),
        date_from: Some("all".into()),
        ..Default::default()
    }
}

/// The browser whose users convert (signup_completed -> first_purchase)
/// about half as often as everyone else's. About 12% of people use it.
pub const PLANTED_BROWSER: &str = "Edge";

/// The event whose doers convert to `first_purchase` about twice as often.
pub const TUTORIAL_EVENT: &str = "watched_tutorial";

/// `2026-11-01T00:00:00Z`, the default end of the generated range.
pub const DEFAULT_END_MS: i64 = 1_793_491_200_000;

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoOptions {
    pub seed: u64,
    /// Target number of events; the output lands within a few events of it
    /// (it stops adding people once their planned events reach the target).
    pub events: usize,
    /// Days of history, ending at `end_ms`.
    pub days: u32,
    /// End of the last day, UTC milliseconds (exclusive). Pass a fixed date
    /// for reproducible output.
    pub end_ms: i64,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            seed: 42,
            events: 1_000_000,
            days: 90,
            end_ms: DEFAULT_END_MS,
        }
    }
}

/// Generates the demo records in ingestion (timestamp) order. Deterministic
/// for equal options. The iterator knows its exact length up front.
pub fn generate(opts: &DemoOptions) -> DemoGenerator {
    DemoGenerator::new(opts)
}

// ---------------------------------------------------------------------------
// PRNG

/// SplitMix64 (Steele, Lea & Flood 2014). Hand-written instead of depending
/// on `rand`: it keeps the dependency tree lean and, more importantly, keeps
/// the generated demo data byte-identical for a seed across crate versions.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    /// A well-mixed seed for stream `i` of `seed`.
    fn stream(seed: u64, i: u64) -> Self {
        let mut r = Rng(seed ^ i.wrapping_add(1).wrapping_mul(0xD1B5_4A32_D192_ED03));
        Rng(r.next_u64())
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }

    /// Uniform in `[0, n)` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.f64();
        let u2 = self.f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    fn lognormal(&mut self, mu: f64, sigma: f64) -> f64 {
        (mu + sigma * self.normal()).exp()
    }

    fn exponential(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.f64()).ln()
    }

    /// Index drawn from a cumulative weight table.
    fn pick(&mut self, cdf: &[f64]) -> usize {
        let x = self.f64() * cdf[cdf.len() - 1];
        cdf.partition_point(|&c| c <= x).min(cdf.len() - 1)
    }

    /// A random (version 4) uuid.
    fn uuid(&mut self) -> u128 {
        let u = (self.next_u64() as u128) << 64 | self.next_u64() as u128;
        (u & !(0xF000u128 << 64) & !(0xC000u128 << 48)) | (0x4000u128 << 64) | (0x8000u128 << 48)
    }
}

fn cdf(weights: impl IntoIterator<Item = f64>) -> Vec<f64> {
    let mut acc = 0.0;
    weights
        .into_iter()
        .map(|w| {
            acc += w;
            acc
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Tables

const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;
const MIN_MS: i64 = 60_000;
/// Sessions of one person start at least this far apart (a session lasts at
/// most about an hour).
const SESSION_SPACING_MS: i64 = 75 * MIN_MS;

const BROWSERS: [(&str, f64); 6] = [
    ("Chrome", 0.52),
    ("Safari", 0.20),
    ("Edge", 0.12),
    ("Firefox", 0.09),
    ("Opera", 0.04),
    ("Samsung Internet", 0.03),
];
const OSES: [&str; 6] = [
    "Windows",
    "Mac OS X",
    "iOS",
    "Android",
    "Linux",
    "Chrome OS",
];
/// P(os | browser), rows in `BROWSERS` order, columns in `OSES` order.
const OS_GIVEN_BROWSER: [[f64; 6]; 6] = [
    [0.50, 0.20, 0.00, 0.20, 0.05, 0.05],
    [0.00, 0.40, 0.60, 0.00, 0.00, 0.00],
    [0.95, 0.05, 0.00, 0.00, 0.00, 0.00],
    [0.60, 0.20, 0.00, 0.00, 0.20, 0.00],
    [0.60, 0.00, 0.00, 0.40, 0.00, 0.00],
    [0.00, 0.00, 0.00, 1.00, 0.00, 0.00],
];
/// (ISO code, UTC offset in hours, weight).
/// `$geoip_city_name` on every event: 30 values, from the person's index
/// (no random draw, so adding it left every other value of the demo as it
/// was). The benchmark's 30-value breakdown.
pub const CITIES: [&str; 30] = [
    "New York",
    "London",
    "Berlin",
    "Paris",
    "Tokyo",
    "Toronto",
    "Sydney",
    "Madrid",
    "Rome",
    "Amsterdam",
    "Stockholm",
    "Oslo",
    "Vienna",
    "Zurich",
    "Dublin",
    "Lisbon",
    "Warsaw",
    "Prague",
    "Seoul",
    "Singapore",
    "Mumbai",
    "Sao Paulo",
    "Mexico City",
    "Chicago",
    "Austin",
    "Seattle",
    "Boston",
    "Denver",
    "Montreal",
    "Cape Town",
];

const COUNTRIES: [(&str, i64, f64); 16] = [
    ("US", -5, 0.30),
    ("GB", 0, 0.08),
    ("DE", 1, 0.08),
    ("IN", 5, 0.09),
    ("BR", -3, 0.06),
    ("FR", 1, 0.05),
    ("CA", -5, 0.05),
    ("JP", 9, 0.04),
    ("AU", 10, 0.03),
    ("ES", 1, 0.03),
    ("NL", 1, 0.03),
    ("MX", -6, 0.03),
    ("PL", 1, 0.03),
    ("IT", 1, 0.03),
    ("SE", 1, 0.02),
    ("KR", 9, 0.02),
];
const PLANS: [(&str, f64); 3] = [("free", 0.68), ("pro", 0.24), ("enterprise", 0.08)];
const UTM_SOURCES: [(&str, f64); 9] = [
    ("google", 0.34),
    ("direct", 0.25),
    ("newsletter", 0.10),
    ("twitter", 0.08),
    ("facebook", 0.07),
    ("linkedin", 0.05),
    ("producthunt", 0.04),
    ("bing", 0.04),
    ("reddit", 0.03),
];
const UTM_DIRECT: usize = 1;
const UTM_PRODUCTHUNT: usize = 6;
/// Relative activity by local hour of day.
const HOUR_WEIGHTS: [f64; 24] = [
    0.20, 0.12, 0.08, 0.06, 0.06, 0.10, 0.25, 0.50, 0.80, 1.00, 1.10, 1.10, //
    1.00, 1.05, 1.10, 1.10, 1.00, 0.90, 0.85, 0.90, 0.95, 0.85, 0.60, 0.35,
];

const URL_HOST: &str = "https://shop.dropscope.dev";
/// (path, weight as a `$pageview` target).
const PAGES: [(&str, f64); 16] = [
    ("/", 0.22),
    ("/pricing", 0.08),
    ("/features", 0.07),
    ("/blog", 0.08),
    ("/blog/funnels-explained", 0.04),
    ("/docs", 0.07),
    ("/products", 0.12),
    ("/products/item", 0.12),
    ("/cart", 0.04),
    ("/about", 0.03),
    ("/dashboard", 0.09),
    ("/settings", 0.04),
    ("/signup", 0.0),
    ("/onboarding", 0.0),
    ("/tutorial", 0.0),
    ("/checkout", 0.0),
];
const PAGE_SIGNUP: usize = 12;
const PAGE_ONBOARDING: usize = 13;
const PAGE_TUTORIAL: usize = 14;
const PAGE_CHECKOUT: usize = 15;

/// Everyday events in popularity order (Zipf weights by rank).
const GENERIC_EVENTS: [&str; 40] = [
    "$pageview",
    "$autocapture",
    "$pageleave",
    "view_item",
    "search",
    "scroll_depth",
    "click_cta",
    "add_to_cart",
    "filter_applied",
    "dashboard_viewed",
    "view_pricing",
    "login",
    "share",
    "help_opened",
    "settings_changed",
    "sort_changed",
    "video_played",
    "remove_from_cart",
    "bookmark_added",
    "notification_clicked",
    "profile_updated",
    "like",
    "comment_posted",
    "wishlist_added",
    "report_created",
    "export_csv",
    "download_started",
    "chat_opened",
    "theme_toggled",
    "invite_sent",
    "checkout_started",
    "coupon_applied",
    "upgrade_clicked",
    "integration_connected",
    "feedback_submitted",
    "tour_skipped",
    "error_shown",
    "rage_click",
    "password_reset",
    "logout",
];
const EV_PAGEVIEW: usize = 0;
const EV_AUTOCAPTURE: usize = 1;
const EV_VIEW_ITEM: usize = 3;
const EV_SEARCH: usize = 4;
const EV_ADD_TO_CART: usize = 7;
const ZIPF_EXPONENT: f64 = 1.1;

const CATEGORIES: [&str; 8] = [
    "shoes",
    "books",
    "electronics",
    "garden",
    "toys",
    "kitchen",
    "outdoor",
    "beauty",
];
const AUTOCAPTURE_TYPES: [&str; 3] = ["click", "submit", "change"];
const INDUSTRIES: [(&str, f64); 8] = [
    ("software", 0.28),
    ("ecommerce", 0.18),
    ("finance", 0.12),
    ("healthcare", 0.10),
    ("education", 0.09),
    ("media", 0.09),
    ("manufacturing", 0.08),
    ("gaming", 0.06),
];
const COMPANY_PREFIX: [&str; 20] = [
    "Acme", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Hooli", "Pied", "Vandelay",
    "Soylent", "Tyrell", "Cyber", "Nimbus", "Blue", "Red", "Quantum", "Atlas", "Zen", "Nova",
    "Orbit",
];
const COMPANY_SUFFIX: [&str; 20] = [
    "Corp",
    "Labs",
    "Systems",
    "Industries",
    "Analytics",
    "Cloud",
    "Works",
    "Dynamics",
    "Logistics",
    "Health",
    "Foods",
    "Media",
    "Bank",
    "Motors",
    "Studio",
    "Networks",
    "Retail",
    "Energy",
    "Software",
    "Games",
];

// Funnel model: P(step | previous step), before the planted effects.
const P_SIGNUP_STARTED: f64 = 0.36;
const P_SIGNUP_COMPLETED: f64 = 0.72;
const P_ONBOARDING: f64 = 0.62;
const P_PURCHASE: f64 = 0.42;
/// P(watched_tutorial | signup_completed) by plan (free, pro, enterprise).
const P_TUTORIAL: [f64; 3] = [0.25, 0.45, 0.35];
/// Purchase multiplier by plan (the confound).
const PLAN_PURCHASE: [f64; 3] = [0.93, 1.25, 1.10];

// Special (planned) events, as bits of a session's `specials`, in order.
const SP_STARTED: u8 = 1;
const SP_COMPLETED: u8 = 2; // `$identify` + `signup_completed`
const SP_TUTORIAL: u8 = 4;
const SP_ONBOARDING: u8 = 8;
const SP_PURCHASE: u8 = 16;

// ---------------------------------------------------------------------------
// Context: options-derived tables and pre-built property values.

struct Company {
    key: String,
    group: Value,
    set: Value,
}

struct Ctx {
    start_ms: i64,
    /// Latest session start.
    last_start: i64,
    day_cdf: Vec<f64>,
    hour_cdf: Vec<f64>,
    browser_cdf: Vec<f64>,
    os_cdf: Vec<Vec<f64>>,
    country_cdf: Vec<f64>,
    plan_cdf: Vec<f64>,
    utm_cdf: Vec<f64>,
    page_cdf: Vec<f64>,
    event_cdf: Vec<f64>,
    company_cdf: Vec<f64>,
    browsers: Vec<Value>,
    oses: Vec<Value>,
    cities: Vec<Value>,
    countries: Vec<Value>,
    plans: Vec<Value>,
    utms: Vec<Value>,
    urls: Vec<Value>,
    categories: Vec<Value>,
    autocapture_types: Vec<Value>,
    usd: Value,
    companies: Vec<Company>,
}

impl Ctx {
    fn new(opts: &DemoOptions) -> Ctx {
        let days = opts.days.max(1) as i64;
        let start_ms = opts.end_ms - days * DAY_MS;
        let launch_day = days * 2 / 3;
        let day_cdf = cdf((0..days).map(|d| {
            let epoch_day = (start_ms + d * DAY_MS).div_euclid(DAY_MS);
            let weekday = (epoch_day + 3).rem_euclid(7); // 0 = Monday
            let week = if weekday >= 5 { 0.65 } else { 1.0 };
            let growth = 0.8 + 0.4 * d as f64 / days as f64;
            let launch = match d - launch_day {
                0 => 2.5,
                1 => 1.6,
                _ => 1.0,
            };
            week * growth * launch
        }));
        let strs = |xs: &[&str]| xs.iter().map(|s| Value::from(*s)).collect::<Vec<_>>();
        let n_companies = (opts.events / 3000).clamp(8, 400);
        let industry_cdf = cdf(INDUSTRIES.iter().map(|x| x.1));
        let companies = (0..n_companies)
            .map(|j| {
                let mut r = Rng::stream(opts.seed ^ 0xC0FF_EE00, j as u64);
                let (p, q) = (j % 20, (j / 20 + j) % 20);
                let name = format!("{} {}", COMPANY_PREFIX[p], COMPANY_SUFFIX[q]);
                let key = name.to_lowercase().replace(' ', "-");
                let industry = INDUSTRIES[r.pick(&industry_cdf)].0;
                let employees = (r.lognormal(4.0, 1.5).round() as i64).max(2);
                let mut group = Map::new();
                group.insert("company".into(), Value::from(key.clone()));
                let mut set = Map::new();
                set.insert("name".into(), Value::from(name));
                set.insert("industry".into(), Value::from(industry));
                set.insert("employees".into(), Value::from(employees));
                Company {
                    key,
                    group: Value::Object(group),
                    set: Value::Object(set),
                }
            })
            .collect();
        Ctx {
            start_ms,
            last_start: opts.end_ms - SESSION_SPACING_MS,
            day_cdf,
            hour_cdf: cdf(HOUR_WEIGHTS),
            browser_cdf: cdf(BROWSERS.iter().map(|b| b.1)),
            os_cdf: OS_GIVEN_BROWSER
                .iter()
                .map(|row| cdf(row.iter().copied()))
                .collect(),
            country_cdf: cdf(COUNTRIES.iter().map(|c| c.2)),
            plan_cdf: cdf(PLANS.iter().map(|p| p.1)),
            utm_cdf: cdf(UTM_SOURCES.iter().map(|u| u.1)),
            page_cdf: cdf(PAGES.iter().map(|p| p.1)),
            event_cdf: cdf(
                (0..GENERIC_EVENTS.len()).map(|r| 1.0 / ((r + 1) as f64).powf(ZIPF_EXPONENT))
            ),
            company_cdf: cdf((0..n_companies).map(|j| 1.0 / (j + 1) as f64)),
            browsers: strs(&BROWSERS.map(|b| b.0)),
            oses: strs(&OSES),
            cities: strs(&CITIES),
            countries: strs(&COUNTRIES.map(|c| c.0)),
            plans: strs(&PLANS.map(|p| p.0)),
            utms: strs(&UTM_SOURCES.map(|u| u.0)),
            urls: PAGES
                .iter()
                .map(|p| Value::from(format!("{URL_HOST}{}", p.0)))
                .collect(),
            categories: strs(&CATEGORIES),
            autocapture_types: strs(&AUTOCAPTURE_TYPES),
            usd: Value::from("USD"),
            companies,
        }
    }

    /// A time on local day `epoch_day` (days since 1970 in local time), at a
    /// local hour drawn from the daily profile, as UTC ms.
    fn time_on_local_day(&self, r: &mut Rng, epoch_day: i64, offset_h: i64) -> i64 {
        let hour = r.pick(&self.hour_cdf) as i64;
        epoch_day * DAY_MS + hour * HOUR_MS + r.below(HOUR_MS as u64) as i64 - offset_h * HOUR_MS
    }

    fn first_session(&self, r: &mut Rng, offset_h: i64) -> i64 {
        let day = r.pick(&self.day_cdf) as i64;
        let local_day = (self.start_ms + day * DAY_MS + offset_h * HOUR_MS).div_euclid(DAY_MS);
        let mut t = self.time_on_local_day(r, local_day, offset_h);
        if t < self.start_ms {
            t += DAY_MS;
        }
        if t > self.last_start {
            t -= DAY_MS;
        }
        t.clamp(self.start_ms, self.last_start)
    }

    /// Start times of up to `k` sessions (fewer if they run past the end).
    fn session_starts(&self, r: &mut Rng, k: usize, offset_h: i64) -> Vec<i64> {
        let mut v = Vec::with_capacity(k);
        v.push(self.first_session(r, offset_h));
        let mean_gap_h = (720.0 / k as f64).clamp(4.0, 72.0);
        while v.len() < k {
            let prev = v[v.len() - 1];
            let gap = (r.exponential(mean_gap_h) * HOUR_MS as f64) as i64;
            let mut t = prev + SESSION_SPACING_MS + gap;
            if gap > 12 * HOUR_MS {
                // Returning on another day: at a typical hour, and less
                // often on weekends.
                let mut local_day = (t + offset_h * HOUR_MS).div_euclid(DAY_MS);
                let weekday = (local_day + 3).rem_euclid(7);
                if weekday >= 5 && r.chance(0.2) {
                    local_day += 7 - weekday;
                }
                t = self.time_on_local_day(r, local_day, offset_h);
                if t < prev + SESSION_SPACING_MS {
                    t = prev + SESSION_SPACING_MS + r.below(30 * MIN_MS as u64) as i64;
                }
            }
            if t > self.last_start {
                break;
            }
            v.push(t);
        }
        v
    }
}

// ---------------------------------------------------------------------------
// Per-person plan

#[derive(Debug, Clone, Copy)]
struct SessionPlan {
    start: i64,
    /// Everyday events (the first is a `$pageview`).
    generic: u16,
    /// `SP_*` bits of planned events in this session.
    specials: u8,
}

struct Person {
    idx: u32,
    rng: Rng,
    browser: u8,
    os: u8,
    country: u8,
    plan: u8,
    utm0: u8,
    company: Option<u16>,
    identified: bool,
    sessions: Vec<SessionPlan>,
    /// Index of the next session to open.
    next_session: u32,
    open: Option<Box<OpenSession>>,
}

/// Extra sessions (0, 1, 2 or 3) until the next funnel step, by weights.
fn step_delay(r: &mut Rng, p_same: f64, p_next: f64, p_two: f64) -> usize {
    let x = r.f64();
    if x < p_same {
        0
    } else if x < p_same + p_next {
        1
    } else if x < p_same + p_next + p_two {
        2
    } else {
        3
    }
}

impl Person {
    fn plan(ctx: &Ctx, seed: u64, idx: u32) -> Person {
        let mut r = Rng::stream(seed, idx as u64);
        let browser = r.pick(&ctx.browser_cdf);
        let os = r.pick(&ctx.os_cdf[browser]);
        let country = r.pick(&ctx.country_cdf);
        let plan = r.pick(&ctx.plan_cdf);
        let utm0 = r.pick(&ctx.utm_cdf);
        let company = r.chance(0.55).then(|| r.pick(&ctx.company_cdf) as u16);

        // Funnel: which steps this person will take (if time allows).
        let planted_browser = BROWSERS[browser].0 == PLANTED_BROWSER;
        // sqrt(1/2) on each of the two later steps; renormalised so the
        // overall rates stay on target.
        let browser_m = if planted_browser {
            std::f64::consts::FRAC_1_SQRT_2
        } else {
            1.0
        } / 0.965;
        let started = r.chance(P_SIGNUP_STARTED);
        let completed = started && r.chance(P_SIGNUP_COMPLETED);
        let tutorial = completed && r.chance(P_TUTORIAL[plan]);
        let onboarded = completed && r.chance(P_ONBOARDING * browser_m);
        // Watchers 2x non-watchers at a ~30% watch rate: 2/1.3 vs 1/1.3.
        let tutorial_m = if tutorial { 2.0 / 1.3 } else { 1.0 / 1.3 };
        let purchased =
            onboarded && r.chance(P_PURCHASE * tutorial_m * PLAN_PURCHASE[plan] * browser_m);

        let mut steps: [(u8, usize); 5] = [(0, 0); 5];
        let mut n_steps = 0;
        let mut cur = 0;
        let mut step = |bit: u8, delay: usize| {
            cur += delay;
            steps[n_steps] = (bit, cur);
            n_steps += 1;
        };
        if started {
            step(SP_STARTED, step_delay(&mut r, 0.70, 0.20, 0.10));
        }
        if completed {
            step(SP_COMPLETED, step_delay(&mut r, 0.60, 0.30, 0.10));
        }
        if tutorial {
            step(SP_TUTORIAL, step_delay(&mut r, 0.50, 0.40, 0.10));
        }
        if onboarded {
            step(SP_ONBOARDING, step_delay(&mut r, 0.50, 0.35, 0.15));
        }
        if purchased {
            step(SP_PURCHASE, step_delay(&mut r, 0.30, 0.40, 0.20));
        }

        // Heavy-tailed activity: lognormal sessions, more for the engaged.
        let mut k = r.lognormal(0.2, 1.0).ceil() as usize;
        if completed {
            k = 2 * k + 1;
        }
        if purchased {
            k += 3;
        }
        let k = k.clamp(cur + 1, 250);
        let offset_h = COUNTRIES[country].1;
        let starts = ctx.session_starts(&mut r, k, offset_h);
        let mut sessions: Vec<SessionPlan> = starts
            .into_iter()
            .map(|start| SessionPlan {
                start,
                generic: 1 + (r.lognormal(1.0, 0.9) as u16).min(59),
                specials: 0,
            })
            .collect();
        for &(bit, s) in &steps[..n_steps] {
            // Steps planned past the end of the range do not happen.
            if let Some(sp) = sessions.get_mut(s) {
                sp.specials |= bit;
            }
        }
        Person {
            idx,
            rng: r,
            browser: browser as u8,
            os: os as u8,
            country: country as u8,
            plan: plan as u8,
            utm0: utm0 as u8,
            company,
            identified: false,
            sessions,
            next_session: 0,
            open: None,
        }
    }

    /// Events this person will produce, not counting `$groupidentify`.
    fn planned_events(&self) -> usize {
        self.sessions
            .iter()
            .map(|s| {
                let identify = usize::from(s.specials & SP_COMPLETED != 0);
                s.generic as usize + s.specials.count_ones() as usize + identify
            })
            .sum()
    }

    fn identifies(&self) -> bool {
        self.sessions.iter().any(|s| s.specials & SP_COMPLETED != 0)
    }
}

// ---------------------------------------------------------------------------
// The generator

/// Kinds of the events of an open session, in order.
const K_GENERIC: u8 = 0;
const K_STARTED: u8 = 1;
const K_IDENTIFY: u8 = 2;
const K_COMPLETED: u8 = 3;
const K_GROUPIDENTIFY: u8 = 4;
const K_TUTORIAL: u8 = 5;
const K_ONBOARDING: u8 = 6;
const K_PURCHASE: u8 = 7;

/// The iterator returned by [`generate`].
///
/// Every person is a cursor on a heap keyed by the time of its next event
/// (the start of its next session, or the next event of its open session);
/// each call makes exactly one event, for the earliest cursor. Events are
/// therefore made one at a time and in timestamp order, without buffering.
pub struct DemoGenerator {
    ctx: Ctx,
    persons: Vec<Person>,
    /// (time of the person's next event, person).
    heap: BinaryHeap<Reverse<(i64, u32)>>,
    /// Companies whose `$groupidentify` has been made.
    announced: Vec<bool>,
    remaining: usize,
}

impl DemoGenerator {
    fn new(opts: &DemoOptions) -> DemoGenerator {
        let ctx = Ctx::new(opts);
        let mut persons = Vec::new();
        let mut total = 0usize;
        let mut announced = vec![false; ctx.companies.len()];
        while total < opts.events && persons.len() < u32::MAX as usize {
            let p = Person::plan(&ctx, opts.seed, persons.len() as u32);
            total += p.planned_events();
            if let (true, Some(c)) = (p.identifies(), p.company) {
                if !announced[c as usize] {
                    announced[c as usize] = true;
                    total += 1; // its `$groupidentify`
                }
            }
            persons.push(p);
        }
        announced.fill(false);
        let heap = persons
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.sessions.first().map(|s| Reverse((s.start, i as u32))))
            .collect();
        DemoGenerator {
            ctx,
            persons,
            heap,
            announced,
            remaining: total,
        }
    }

    /// Number of people generated.
    pub fn persons(&self) -> usize {
        self.persons.len()
    }
}

impl Iterator for DemoGenerator {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        let Reverse((_, p)) = self.heap.pop()?;
        let ctx = &self.ctx;
        let person = &mut self.persons[p as usize];
        let mut sess = match person.open.take() {
            Some(sess) => sess,
            None => {
                let s = person.next_session as usize;
                person.next_session += 1;
                OpenSession::open(ctx, person, s, &mut self.announced)
            }
        };
        let event = sess.emit(ctx, person);
        if sess.next < sess.items.len() {
            self.heap.push(Reverse((sess.t, p)));
            person.open = Some(sess);
        } else if let Some(s) = person.sessions.get(person.next_session as usize) {
            self.heap.push(Reverse((s.start, p)));
        }
        self.remaining = self.remaining.saturating_sub(1);
        Some(Record::Event(event))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

fn distinct_id(idx: u32, identified: bool) -> String {
    if identified {
        format!("user-{idx}")
    } else {
        format!("anon-{idx}")
    }
}

fn price(x: f64) -> Value {
    Value::from((x * 100.0).round() / 100.0)
}

/// A person's session in progress.
struct OpenSession {
    did: String,
    sid: Value,
    utm: usize,
    url: usize,
    /// Time of the next event.
    t: i64,
    /// The properties every event of the session carries (but the URL).
    base: Vec<(&'static str, Value)>,
    /// `K_*` of the session's events, and the index of the next one.
    items: Vec<u8>,
    next: usize,
}

impl OpenSession {
    fn open(ctx: &Ctx, person: &mut Person, s: usize, announced: &mut [bool]) -> Box<OpenSession> {
        let plan = person.sessions[s];
        let r = &mut person.rng;
        let mut utm = if s == 0 {
            person.utm0 as usize
        } else if r.chance(0.55) {
            UTM_DIRECT
        } else {
            r.pick(&ctx.utm_cdf)
        };
        if utm == UTM_PRODUCTHUNT && s > 0 {
            utm = UTM_DIRECT; // the launch brings people once
        }
        let sid = Value::from(format_uuid(r.uuid()));

        // Planned events go after generic event `pos - 1`.
        let mut items = Vec::with_capacity(plan.generic as usize + 8);
        let mut pos = 1u16;
        let mut g = 0u16;
        for bit in [
            SP_STARTED,
            SP_COMPLETED,
            SP_TUTORIAL,
            SP_ONBOARDING,
            SP_PURCHASE,
        ] {
            if plan.specials & bit == 0 {
                continue;
            }
            pos += r.below((plan.generic - pos + 1) as u64) as u16;
            while g < pos {
                items.push(K_GENERIC);
                g += 1;
            }
            match bit {
                SP_STARTED => items.push(K_STARTED),
                SP_COMPLETED => {
                    items.extend([K_IDENTIFY, K_COMPLETED]);
                    if let Some(c) = person.company {
                        if !std::mem::replace(&mut announced[c as usize], true) {
                            items.push(K_GROUPIDENTIFY);
                        }
                    }
                }
                SP_TUTORIAL => items.push(K_TUTORIAL),
                SP_ONBOARDING => items.push(K_ONBOARDING),
                _ => items.push(K_PURCHASE),
            }
        }
        while g < plan.generic {
            items.push(K_GENERIC);
            g += 1;
        }
        let mut sess = Box::new(OpenSession {
            did: distinct_id(person.idx, person.identified),
            sid,
            utm,
            url: 0,
            t: plan.start,
            base: Vec::with_capacity(6),
            items,
            next: 0,
        });
        sess.rebase(ctx, person);
        sess
    }

    /// Rebuilds `base` (at the start, and when the person identifies).
    fn rebase(&mut self, ctx: &Ctx, person: &Person) {
        self.base.clear();
        self.base.extend([
            ("$session_id", self.sid.clone()),
            ("$browser", ctx.browsers[person.browser as usize].clone()),
            ("$os", ctx.oses[person.os as usize].clone()),
            ("utm_source", ctx.utms[self.utm].clone()),
            (
                "$geoip_city_name",
                ctx.cities[(person.idx.wrapping_mul(2_654_435_761) >> 7) as usize % CITIES.len()]
                    .clone(),
            ),
        ]);
        if let (true, Some(c)) = (person.identified, person.company) {
            self.base
                .push(("$groups", ctx.companies[c as usize].group.clone()));
        }
    }

    /// Properties for the next event: the session's, at the current URL,
    /// with room for `extra` more. (Sized exactly: growing the map, or maps
    /// over ~1 KiB, make the allocator much slower.)
    fn props(&self, ctx: &Ctx, extra: usize) -> Map<String, Value> {
        let mut m = Map::with_capacity(self.base.len() + 1 + extra);
        for (k, v) in &self.base {
            m.insert(k.to_string(), v.clone());
        }
        m.insert("$current_url".into(), ctx.urls[self.url].clone());
        m
    }

    /// Makes the session's next event and advances its clock.
    fn emit(&mut self, ctx: &Ctx, person: &mut Person) -> Event {
        let kind = self.items[self.next];
        let first = self.next == 0;
        self.next += 1;
        let r = &mut person.rng;
        let name: &str;
        let mut props;
        match kind {
            K_GENERIC => {
                let ev = if first {
                    EV_PAGEVIEW
                } else {
                    r.pick(&ctx.event_cdf)
                };
                if ev == EV_PAGEVIEW {
                    self.url = r.pick(&ctx.page_cdf);
                }
                name = GENERIC_EVENTS[ev];
                props = self.props(ctx, 2);
                match ev {
                    EV_AUTOCAPTURE => {
                        let i = r.below(AUTOCAPTURE_TYPES.len() as u64) as usize;
                        props.insert("$event_type".into(), ctx.autocapture_types[i].clone());
                    }
                    EV_VIEW_ITEM | EV_ADD_TO_CART => {
                        let i = r.below(CATEGORIES.len() as u64) as usize;
                        props.insert("category".into(), ctx.categories[i].clone());
                        props.insert("price".into(), price(r.lognormal(3.3, 0.8)));
                    }
                    EV_SEARCH => {
                        props.insert("results_count".into(), Value::from(r.below(120)));
                    }
                    _ => {}
                }
            }
            K_STARTED => {
                self.url = PAGE_SIGNUP;
                name = DEMO_FUNNEL[1];
                props = self.props(ctx, 0);
            }
            K_IDENTIFY => {
                let anon = std::mem::replace(&mut self.did, distinct_id(person.idx, true));
                let mut set = Map::new();
                set.insert("plan".into(), ctx.plans[person.plan as usize].clone());
                set.insert(
                    "country".into(),
                    ctx.countries[person.country as usize].clone(),
                );
                let domain = match person.company {
                    Some(c) => format!("{}.com", ctx.companies[c as usize].key),
                    None => "example.com".to_string(),
                };
                set.insert(
                    "email".into(),
                    Value::from(format!("user-{}@{domain}", person.idx)),
                );
                let mut set_once = Map::new();
                set_once.insert(
                    "initial_utm_source".into(),
                    ctx.utms[person.utm0 as usize].clone(),
                );
                name = "$identify";
                props = self.props(ctx, 3);
                props.insert("$anon_distinct_id".into(), Value::from(anon));
                props.insert("$set".into(), Value::Object(set));
                props.insert("$set_once".into(), Value::Object(set_once));
                person.identified = true;
                self.rebase(ctx, person);
            }
            K_COMPLETED => {
                self.url = PAGE_SIGNUP;
                name = DEMO_FUNNEL[2];
                props = self.props(ctx, 0);
            }
            K_GROUPIDENTIFY => {
                let company = &ctx.companies[person.company.expect("has a company") as usize];
                name = "$groupidentify";
                props = self.props(ctx, 3);
                props.insert("$group_type".into(), Value::from("company"));
                props.insert("$group_key".into(), Value::from(company.key.clone()));
                props.insert("$group_set".into(), company.set.clone());
            }
            K_TUTORIAL => {
                self.url = PAGE_TUTORIAL;
                name = TUTORIAL_EVENT;
                props = self.props(ctx, 1);
                props.insert("video_seconds".into(), Value::from(30 + r.below(400)));
            }
            K_ONBOARDING => {
                self.url = PAGE_ONBOARDING;
                name = DEMO_FUNNEL[3];
                props = self.props(ctx, 1);
                props.insert("steps_completed".into(), Value::from(3 + r.below(3)));
            }
            _ => {
                self.url = PAGE_CHECKOUT;
                name = DEMO_FUNNEL[4];
                props = self.props(ctx, 3);
                props.insert("revenue".into(), price(r.lognormal(3.8, 0.7)));
                props.insert("currency".into(), ctx.usd.clone());
                props.insert("plan".into(), ctx.plans[person.plan as usize].clone());
            }
        }
        let r = &mut person.rng;
        let event = Event {
            uuid: r.uuid(),
            event: name.to_string(),
            distinct_id: self.did.clone(),
            timestamp: self.t,
            properties: props,
        };
        // 2 s to 55 s to the next event: a session stays under an hour.
        self.t += 2_000 + (r.exponential(18_000.0) as i64).min(53_000);
        event
    }
}

impl ExactSizeIterator for DemoGenerator {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn opts(seed: u64, events: usize) -> DemoOptions {
        DemoOptions {
            seed,
            events,
            ..DemoOptions::default()
        }
    }

    fn events(opts: &DemoOptions) -> Vec<Event> {
        generate(opts)
            .map(|r| match r {
                Record::Event(e) => e,
                other => panic!("unexpected record {other:?}"),
            })
            .collect()
    }

    /// Per-person facts computed from the records alone: distinct ids are
    /// joined by `$identify` (union-find), then grouped.
    #[derive(Default, Debug, Clone)]
    struct Facts {
        browser: String,
        plan: String,
        first_pageview: Option<i64>,
        /// First time of each funnel step after step 0, in order.
        steps: [Option<i64>; 5],
        tutorial: bool,
    }

    fn find(parent: &mut HashMap<String, String>, x: &str) -> String {
        let mut cur = x.to_string();
        loop {
            let p = parent.get(&cur).cloned().unwrap_or_else(|| cur.clone());
            if p == cur {
                return cur;
            }
            cur = p;
        }
    }

    fn persons(events: &[Event]) -> Vec<Facts> {
        let mut parent: HashMap<String, String> = HashMap::new();
        for e in events {
            if e.event == "$identify" {
                let anon = e.properties["$anon_distinct_id"].as_str().unwrap();
                let (a, b) = (find(&mut parent, anon), find(&mut parent, &e.distinct_id));
                if a != b {
                    parent.insert(a, b);
                }
            }
        }
        let mut by: HashMap<String, Facts> = HashMap::new();
        for e in events {
            let f = by.entry(find(&mut parent, &e.distinct_id)).or_default();
            if let Some(b) = e.properties.get("$browser").and_then(Value::as_str) {
                f.browser = b.to_string();
            }
            if let Some(Value::Object(set)) = e.properties.get("$set") {
                f.plan = set["plan"].as_str().unwrap().to_string();
            }
            if e.event == TUTORIAL_EVENT {
                f.tutorial = true;
            }
            // Ordered funnel: each step after the previous one.
            if let Some(i) = DEMO_FUNNEL.iter().position(|s| *s == e.event) {
                if f.steps[i].is_none() && (i == 0 || f.steps[i - 1].is_some()) {
                    f.steps[i] = Some(e.timestamp);
                }
            }
            if e.event == "$pageview" && f.first_pageview.is_none() {
                f.first_pageview = Some(e.timestamp);
            }
        }
        by.into_values().collect()
    }

    /// Purchase rate among those who completed signup, split by `pred`.
    fn rates(ps: &[Facts], pred: impl Fn(&Facts) -> bool) -> (f64, f64, usize, usize) {
        let (mut yes, mut yes_buy, mut no, mut no_buy) = (0, 0, 0, 0);
        for p in ps.iter().filter(|p| p.steps[2].is_some()) {
            let buy = usize::from(p.steps[4].is_some());
            if pred(p) {
                yes += 1;
                yes_buy += buy;
            } else {
                no += 1;
                no_buy += buy;
            }
        }
        (
            yes_buy as f64 / yes as f64,
            no_buy as f64 / no as f64,
            yes,
            no,
        )
    }

    #[test]
    fn demo_is_deterministic() {
        let a: Vec<Record> = generate(&opts(7, 20_000)).take(1000).collect();
        let b: Vec<Record> = generate(&opts(7, 20_000)).take(1000).collect();
        let c: Vec<Record> = generate(&opts(8, 20_000)).take(1000).collect();
        assert_eq!(a.len(), 1000);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn demo_event_count_near_target() {
        let o = opts(1, 50_000);
        let g = generate(&o);
        let expected = g.len();
        let evs = events(&o);
        assert_eq!(evs.len(), expected, "size_hint is exact");
        assert!(
            (45_000..=55_000).contains(&evs.len()),
            "{} events for a target of 50000",
            evs.len()
        );
    }

    #[test]
    fn demo_shape() {
        let o = opts(3, 50_000);
        let evs = events(&o);
        let start = o.end_ms - o.days as i64 * DAY_MS;
        // Time-ordered, inside the range, unique uuids.
        assert!(evs.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));
        assert!(evs.iter().all(|e| (start..o.end_ms).contains(&e.timestamp)));
        let mut uuids: Vec<u128> = evs.iter().map(|e| e.uuid).collect();
        uuids.sort_unstable();
        uuids.dedup();
        assert_eq!(uuids.len(), evs.len());
        // Dozens of event names, `$pageview` the most common.
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for e in &evs {
            *counts.entry(e.event.as_str()).or_default() += 1;
        }
        assert!(counts.len() >= 40, "{} event names", counts.len());
        let top = counts.iter().max_by_key(|(_, c)| **c).unwrap();
        assert_eq!(*top.0, "$pageview");
        // Anonymous events precede the `$identify` that joins them.
        let identified: std::collections::HashSet<&str> = evs
            .iter()
            .filter(|e| e.event == "$identify")
            .map(|e| e.properties["$anon_distinct_id"].as_str().unwrap())
            .collect();
        assert!(identified.len() > 100);
        assert!(evs
            .iter()
            .any(|e| identified.contains(e.distinct_id.as_str()) && e.event == "signup_started"));
        assert!(counts["$groupidentify"] >= 8);
        assert!(evs.iter().any(|e| e.properties.contains_key("$groups")));
    }

    #[test]
    fn demo_applies_to_a_store() {
        use dropscope_store::state::{Applied, State};
        let mut state = State::new();
        let mut n = 0;
        for r in generate(&opts(5, 20_000)) {
            assert_eq!(state.apply(&r), Applied::Stored);
            n += 1;
        }
        assert_eq!(state.event_count(), n);
    }

    #[test]
    fn demo_planted_effects_are_visible() {
        let evs = events(&opts(42, 300_000));
        let ps = persons(&evs);
        let (w, nw, nw_n, _) = rates(&ps, |p| p.tutorial);
        assert!(nw_n > 300, "{nw_n} watchers");
        assert!(w >= 1.6 * nw, "tutorial: {w:.3} vs {nw:.3}");
        let (b, other, b_n, _) = rates(&ps, |p| p.browser == PLANTED_BROWSER);
        assert!(b_n > 100, "{b_n} on {PLANTED_BROWSER}");
        assert!(b <= 0.65 * other, "browser: {b:.3} vs {other:.3}");
        // The confound: pro users watch the tutorial more often.
        let watch = |plan: &str| {
            let c: Vec<_> = ps
                .iter()
                .filter(|p| p.steps[2].is_some() && p.plan == plan)
                .collect();
            c.iter().filter(|p| p.tutorial).count() as f64 / c.len() as f64
        };
        assert!(watch("pro") > watch("free") + 0.1);
    }

    /// `cargo test --release -p dropscope-testkit demo_rate -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn demo_rate() {
        let events = std::env::var("DEMO_EVENTS").map_or(1_000_000, |v| v.parse().unwrap());
        let o = DemoOptions {
            events,
            ..DemoOptions::default()
        };
        let t = std::time::Instant::now();
        let mut n = 0usize;
        for r in generate(&o) {
            std::hint::black_box(&r);
            n += 1;
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{n} events in {secs:.2}s: {:.2} M events/s",
            n as f64 / secs / 1e6
        );
    }

    /// `cargo test --release -p dropscope-testkit demo_report -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn demo_report() {
        let o = DemoOptions::default();
        let t = std::time::Instant::now();
        let g = generate(&o);
        let n_persons = g.persons();
        let planned = g.len();
        let plan_time = t.elapsed();
        let mut n = 0usize;
        for r in g {
            std::hint::black_box(&r);
            n += 1;
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{n} events (planned {planned}, target {}), {n_persons} persons, plan {:?}, {:.2} M events/s",
            o.events,
            plan_time,
            n as f64 / secs / 1e6
        );
        let evs = events(&o);
        let ps = persons(&evs);
        let entrants = ps.iter().filter(|p| p.steps[0].is_some()).count();
        let mut within = [0usize; 5];
        let window = 14 * DAY_MS;
        for p in &ps {
            let Some(t0) = p.steps[0] else { continue };
            for (i, s) in p.steps.iter().enumerate() {
                match s {
                    Some(t) if *t - t0 <= window => within[i] += 1,
                    _ => break,
                }
            }
        }
        let pct: Vec<String> = within
            .iter()
            .map(|c| format!("{:.1}%", 100.0 * *c as f64 / entrants as f64))
            .collect();
        println!(
            "funnel within 14 days of first pageview: {}",
            pct.join(" / ")
        );
        let (w, nw, wn, nwn) = rates(&ps, |p| p.tutorial);
        println!(
            "purchase | signup_completed: tutorial {w:.3} (n={wn}) vs not {nw:.3} (n={nwn}): x{:.2}",
            w / nw
        );
        let (b, ot, bn, on) = rates(&ps, |p| p.browser == PLANTED_BROWSER);
        println!(
            "purchase | signup_completed: {PLANTED_BROWSER} {b:.3} (n={bn}) vs others {ot:.3} (n={on}): x{:.2}",
            b / ot
        );
        for plan in ["free", "pro", "enterprise"] {
            let sub: Vec<Facts> = ps.iter().filter(|p| p.plan == plan).cloned().collect();
            let (w, nw, wn, nwn) = rates(&sub, |p| p.tutorial);
            println!(
                "  plan={plan}: watch rate {:.2}, purchase tutorial {w:.3} vs not {nw:.3}: x{:.2}",
                wn as f64 / (wn + nwn) as f64,
                w / nw
            );
        }
        let share =
            ps.iter().filter(|p| p.browser == PLANTED_BROWSER).count() as f64 / ps.len() as f64;
        println!("{PLANTED_BROWSER} share of persons: {:.1}%", 100.0 * share);
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for e in &evs {
            *counts.entry(e.event.as_str()).or_default() += 1;
        }
        let mut counts: Vec<_> = counts.into_iter().collect();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        println!("{} event names; top: {:?}", counts.len(), &counts[..8]);
        let mut per: HashMap<&str, usize> = HashMap::new();
        for e in &evs {
            *per.entry(e.distinct_id.as_str()).or_default() += 1;
        }
        let mut v: Vec<usize> = per.into_values().collect();
        v.sort_unstable();
        println!(
            "events per distinct id: median {}, p90 {}, p99 {}, max {}",
            v[v.len() / 2],
            v[v.len() * 9 / 10],
            v[v.len() * 99 / 100],
            v[v.len() - 1]
        );
        let mut by_wd = [0usize; 7];
        for e in &evs {
            by_wd[((e.timestamp.div_euclid(DAY_MS) + 3).rem_euclid(7)) as usize] += 1;
        }
        println!("events by weekday (Mon..Sun): {by_wd:?}");
    }
}
