//! `/metrics` fetched and parsed as the Prometheus text format.

use super::*;

// ------------------------------------------------------------------------------------------
// Prometheus text format

/// One scrape: every sample by its series (`name` or `name{labels}` as written), with the
/// `# TYPE` of every metric family.
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    pub samples: BTreeMap<String, f64>,
    pub types: BTreeMap<String, String>,
}

impl Scrape {
    /// The value of `name` (a series without labels); panics when it is absent.
    #[track_caller]
    pub fn get(&self, name: &str) -> f64 {
        *self
            .samples
            .get(name)
            .unwrap_or_else(|| panic!("no series {name} in the scrape: {:?}", self.samples))
    }

    /// `get(name)` as a whole number (every acr series is a counter or a gauge of whole units).
    #[track_caller]
    pub fn n(&self, name: &str) -> u64 {
        let v = self.get(name);
        assert!(
            v >= 0.0 && v.fract() == 0.0 && v < 2f64.powi(53),
            "{name} = {v} is not a count"
        );
        v as u64
    }

    /// How much `name` grew since `before`.
    #[track_caller]
    pub fn delta(&self, before: &Scrape, name: &str) -> i64 {
        self.n(name) as i64 - before.n(name) as i64
    }
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// Parses the Prometheus text exposition format (0.0.4): `# HELP` and `# TYPE` lines, other
/// comments, blank lines, and samples `name[{label="value",...}] value [timestamp]`. Strict
/// where acr could go wrong: a sample must follow its family's `# TYPE`, a TYPE must be a
/// known one and come once, a series must appear once, names and values must be well formed.
pub fn parse_prometheus(text: &str) -> Result<Scrape, String> {
    let mut scrape = Scrape::default();
    for (i, line) in text.lines().enumerate() {
        let at = |what: &str| format!("line {}: {what}: {line:?}", i + 1);
        let line_t = line.trim();
        if line_t.is_empty() {
            continue;
        }
        if let Some(comment) = line_t.strip_prefix('#') {
            let mut words = comment.split_whitespace();
            match words.next() {
                Some("TYPE") => {
                    let name = words.next().ok_or_else(|| at("TYPE without a name"))?;
                    let kind = words.next().ok_or_else(|| at("TYPE without a type"))?;
                    if !is_metric_name(name) {
                        return Err(at("bad metric name"));
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(at("unknown type"));
                    }
                    if words.next().is_some() {
                        return Err(at("junk after the type"));
                    }
                    if scrape.types.insert(name.into(), kind.into()).is_some() {
                        return Err(at("a second TYPE for the family"));
                    }
                }
                Some("HELP") => {
                    let name = words.next().ok_or_else(|| at("HELP without a name"))?;
                    if !is_metric_name(name) {
                        return Err(at("bad metric name"));
                    }
                }
                _ => {} // any other comment
            }
            continue;
        }
        // The series: a name, then labels in braces (whose values may hold spaces).
        let name_end = line_t
            .find(|c: char| c == '{' || c.is_whitespace())
            .ok_or_else(|| at("a sample without a value"))?;
        let name = &line_t[..name_end];
        if !is_metric_name(name) {
            return Err(at("bad metric name"));
        }
        let (series, rest) = if line_t[name_end..].starts_with('{') {
            let mut in_string = false;
            let mut escaped = false;
            let mut close = None;
            for (j, c) in line_t[name_end..].char_indices() {
                match (in_string, escaped, c) {
                    (true, true, _) => escaped = false,
                    (true, false, '\\') => escaped = true,
                    (true, false, '"') => in_string = false,
                    (false, _, '"') => in_string = true,
                    (false, _, '}') => {
                        close = Some(name_end + j);
                        break;
                    }
                    _ => {}
                }
            }
            let close = close.ok_or_else(|| at("unclosed label set"))?;
            (&line_t[..=close], &line_t[close + 1..])
        } else {
            (name, &line_t[name_end..])
        };
        let mut fields = rest.split_whitespace();
        let value = fields
            .next()
            .and_then(parse_value)
            .ok_or_else(|| at("a sample without a number"))?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>().map_err(|_| at("bad timestamp"))?;
        }
        if fields.next().is_some() {
            return Err(at("junk after the sample"));
        }
        // The family: the name itself, or a histogram's/summary's base name.
        let family = [name, name.trim_end_matches("_bucket")]
            .into_iter()
            .chain(
                ["_sum", "_count"]
                    .iter()
                    .filter_map(|s| name.strip_suffix(s)),
            )
            .find(|f| scrape.types.contains_key(*f))
            .ok_or_else(|| at("a sample before its family's TYPE"))?;
        if scrape.types[family] == "counter" && value < 0.0 {
            return Err(at("a negative counter"));
        }
        if scrape.samples.insert(series.to_string(), value).is_some() {
            return Err(at("the series appears twice"));
        }
    }
    Ok(scrape)
}

/// The counters and gauges acr must expose, with their types.
pub const ACR_SERIES: [(&str, &str); 10] = [
    ("acr_cache_hits_total", "counter"),
    ("acr_cache_misses_total", "counter"),
    ("acr_bytes_from_store_total", "counter"),
    ("acr_bytes_from_upstream_total", "counter"),
    ("acr_upstream_requests_total", "counter"),
    ("acr_digest_mismatches_total", "counter"),
    ("acr_stale_serves_total", "counter"),
    ("acr_evictions_total", "counter"),
    ("acr_store_bytes", "gauge"),
    ("acr_store_objects", "gauge"),
];

/// `GET /metrics` of `acr`, parsed; checks the content type and that every acr series is
/// there with its type.
#[track_caller]
pub fn scrape(acr: &Acr) -> Scrape {
    let r = acr.fetch("GET", "/metrics", &[]);
    assert_eq!(r.status, 200, "GET /metrics: {}", r.text());
    let ct = r.header("content-type").unwrap_or_default().to_string();
    assert!(
        ct.starts_with("text/plain") && ct.contains("version=0.0.4"),
        "/metrics Content-Type {ct:?}"
    );
    let s = parse_prometheus(&r.text())
        .unwrap_or_else(|e| panic!("/metrics is not Prometheus text ({e}):\n{}", r.text()));
    for (name, kind) in ACR_SERIES {
        assert_eq!(
            s.types.get(name).map(String::as_str),
            Some(kind),
            "TYPE of {name}"
        );
        s.n(name);
    }
    s
}
